pub mod bench;
pub mod rerank;
pub mod score;
pub mod serve;
pub mod tokenize;

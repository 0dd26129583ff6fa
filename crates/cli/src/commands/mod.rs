pub mod bench;
pub mod eval;
pub mod metrics;
pub mod rerank;
pub mod score;
pub mod serve;
pub mod tokenize;
pub mod train;

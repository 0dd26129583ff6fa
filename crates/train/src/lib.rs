//! bge-rerank's fine-tuning: the model card's JSON Lines data -> groups (one positive, sampled
//! negatives) -> inputs built exactly as at inference -> FlagEmbedding's group loss -> AdamW over a
//! [`bge_rerank_engine::trainable::TrainableModel`] -> checkpoints transformers loads unchanged.

pub mod loss;

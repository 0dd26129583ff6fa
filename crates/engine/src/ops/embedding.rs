//! Embedding tables: rows looked up by token id. The tables are most of an encoder's weights
//! (bge-reranker-base: 192 M of 278 M parameters), so they are held in the compute precision (bf16
//! or f16 tables take half the memory of f32) and only the looked-up rows are widened to f32.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::Numerics;

#[derive(Debug, Clone)]
pub struct Embedding {
    /// (rows, dim), in the compute precision (f32 when training).
    table: Tensor,
}

impl Embedding {
    pub fn load(vb: VarBuilder, rows: usize, dim: usize, numerics: Numerics) -> Result<Self> {
        let table = numerics.compute_weight(&vb, &[rows, dim], "weight")?;
        Ok(Self { table })
    }

    /// The rows of `ids` (a 1-D u32 tensor), as f32 (ids.len(), dim).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.table.index_select(ids, 0)?.to_dtype(DType::F32)
    }

    /// Rows by id, as f32 (Gemma's tied output head reads the "Yes" row).
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_slice(ids, ids.len(), self.table.device())?;
        self.forward(&ids)
    }
}

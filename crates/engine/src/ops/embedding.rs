//! Embedding tables: rows looked up by token id. The tables are most of an encoder's weights
//! (bge-reranker-base: 192 M of 278 M parameters), so they are held in the compute precision (bf16
//! or f16 tables take half the memory of f32; int8 inference holds int8 values with a scale per
//! block of 32)
//! and only the looked-up rows are widened to f32.

use candle_core::{DType, Result, Tensor};
use candle_nn::VarBuilder;

use super::gemm::int8::quantize_symmetric;
use super::saved_int8::{self, QuantizedTensor};
use super::Numerics;

#[derive(Debug, Clone)]
pub struct Embedding {
    table: Table,
}

#[derive(Debug, Clone)]
enum Table {
    /// (rows, dim), in the compute precision (f32 when training).
    Tensor(Tensor),
    /// Blocks of [`BLOCK`] values quantized symmetrically by their own max |value| / 127 (as
    /// llama.cpp's q8_0): 1.125 bytes a value. A scale per whole row measured as too coarse: on
    /// rerank-100 it lowered the Spearman correlation with f32 scores from 0.975 to 0.958.
    Int8 {
        values: Vec<i8>,
        scales: Vec<f32>,
        dim: usize,
    },
}

/// Values per scale of an int8 table.
const BLOCK: usize = 32;

impl Embedding {
    pub fn load(vb: VarBuilder, rows: usize, dim: usize, numerics: Numerics) -> Result<Self> {
        if let Some((values, scales)) = saved_int8::read(&vb, "weight", &[rows, dim])? {
            if !numerics.quantizes() || scales.len() != (rows * dim).div_ceil(BLOCK) {
                candle_core::bail!(
                    "{}.weight is saved as int8 with a scale per {BLOCK} values: it loads only \
                     in int8",
                    vb.prefix()
                );
            }
            let table = Table::Int8 {
                values,
                scales,
                dim,
            };
            return Ok(Self { table });
        }
        if numerics.quantizes() {
            let table = numerics.weight(&vb, &[rows, dim], "weight")?;
            // Quantized from the loaded values in place (a vocabulary-sized copy would double the
            // peak memory of the load).
            let (values, scales) = super::with_f32_values(&table, |table| {
                let mut values = vec![0i8; table.len()];
                let mut scales = Vec::with_capacity(table.len().div_ceil(BLOCK));
                for (block, out) in table.chunks(BLOCK).zip(values.chunks_mut(BLOCK)) {
                    scales.push(quantize_symmetric(block, out));
                }
                (values, scales)
            })?;
            drop(table);
            saved_int8::record(|| QuantizedTensor {
                name: format!("{}.weight", vb.prefix()),
                shape: vec![rows, dim],
                values: values.clone(),
                scales: scales.clone(),
            });
            let table = Table::Int8 {
                values,
                scales,
                dim,
            };
            return Ok(Self { table });
        }
        let table = Table::Tensor(numerics.compute_weight(&vb, &[rows, dim], "weight")?);
        Ok(Self { table })
    }

    /// The rows of `ids` (a 1-D u32 tensor), as f32 (ids.len(), dim).
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        match &self.table {
            Table::Tensor(table) => table.index_select(ids, 0)?.to_dtype(DType::F32),
            Table::Int8 {
                values,
                scales,
                dim,
            } => {
                let ids = ids.to_vec1::<u32>()?;
                let mut out = Vec::with_capacity(ids.len() * dim);
                for &id in &ids {
                    let id = id as usize;
                    let Some(row) = values.get(id * dim..(id + 1) * dim) else {
                        candle_core::bail!("token id {id} is outside the embedding table");
                    };
                    let first = id * dim;
                    out.extend(
                        (row.iter().enumerate())
                            .map(|(i, &q)| f32::from(q) * scales[(first + i) / BLOCK]),
                    );
                }
                Tensor::from_vec(out, (ids.len(), *dim), ids_device(&self.table))
            }
        }
    }

    /// Rows by id, as f32 (Gemma's tied output head reads the "Yes" row).
    pub fn rows(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::from_slice(ids, ids.len(), ids_device(&self.table))?;
        self.forward(&ids)
    }
}

fn ids_device(table: &Table) -> &candle_core::Device {
    match table {
        Table::Tensor(t) => t.device(),
        Table::Int8 { .. } => &candle_core::Device::Cpu,
    }
}

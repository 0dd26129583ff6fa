//! int8 weights as a saved folder holds them (`bge-rerank quantize`): each quantized matrix as
//! safetensors `I8` values under its own name, beside an `F32` tensor `<name>_scale` of its scales
//! (one per output channel for the layers' matrices, one per 32 values for embedding tables).
//!
//! Which tensors are quantized is decided in one place, the int8 load (`Linear`, `Embedding`): saving
//! loads the model in int8 while recording what it quantizes, so a saved folder holds exactly the
//! values a load would compute, and loading it gives the very same scores.

use std::cell::RefCell;

use candle_core::{DType, Result};
use candle_nn::VarBuilder;

/// The suffix of a quantized tensor's scales (`weight` -> `weight_scale`).
pub const SCALE_SUFFIX: &str = "_scale";

/// One tensor as the int8 load quantized it: row-major values and their scales.
#[derive(Debug, Clone)]
pub struct QuantizedTensor {
    /// The checkpoint's name for it.
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<i8>,
    pub scales: Vec<f32>,
}

thread_local! {
    /// What the loads on this thread quantized, while `recording`.
    static RECORD: RefCell<Option<Vec<QuantizedTensor>>> = const { RefCell::new(None) };
}

/// Runs `load` (on this thread) and returns what it quantized, in order, beside its result.
pub fn recording<T>(load: impl FnOnce() -> T) -> (T, Vec<QuantizedTensor>) {
    RECORD.with(|record| *record.borrow_mut() = Some(Vec::new()));
    let result = load();
    let quantized = RECORD
        .with(|record| record.borrow_mut().take())
        .unwrap_or_default();
    (result, quantized)
}

/// Notes a quantized tensor, if recording.
pub(crate) fn record(tensor: impl FnOnce() -> QuantizedTensor) {
    RECORD.with(|record| {
        if let Some(list) = record.borrow_mut().as_mut() {
            list.push(tensor());
        }
    });
}

/// Takes a recorded tensor back out of the saved set: a family whose score head reads a table
/// exactly (Gemma's tied "Yes" row) keeps that table as stored.
pub(crate) fn keep_as_stored(name: &str) {
    RECORD.with(|record| {
        if let Some(list) = record.borrow_mut().as_mut() {
            list.retain(|t| t.name != name);
        }
    });
}

/// The tensor `name` of `vb` as saved int8 values and scales, if the folder holds it so
/// (`None`: it is stored as floats).
pub(crate) fn read(
    vb: &VarBuilder,
    name: &str,
    shape: &[usize],
) -> Result<Option<(Vec<i8>, Vec<f32>)>> {
    let scale_name = format!("{name}{SCALE_SUFFIX}");
    if !vb.contains_tensor(&scale_name) {
        return Ok(None);
    }
    // I8 tensors are read with their bits as U8 (candle has no i8): reinterpret them.
    let values = vb.get_with_hints_dtype(shape, name, Default::default(), DType::U8)?;
    let values: Vec<i8> = values
        .flatten_all()?
        .to_vec1::<u8>()?
        .into_iter()
        .map(|b| b as i8)
        .collect();
    let scales = vb.get_unchecked_dtype(&scale_name, DType::F32)?;
    Ok(Some((values, scales.flatten_all()?.to_vec1::<f32>()?)))
}

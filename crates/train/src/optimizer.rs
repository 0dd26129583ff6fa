//! AdamW (decoupled weight decay, bias-corrected, as torch.optim.AdamW and candle-nn's `AdamW`),
//! the linear warm-up/decay schedule and global-norm gradient clipping of the Hugging Face Trainer.
//!
//! candle-nn's `AdamW` keeps its moments private, so a checkpoint could not carry them and `--resume`
//! would restart the optimizer cold; this one computes the same update and saves its state.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor, Var};
use candle_nn::ParamsAdamW;

use crate::error::{Result, TrainError};

pub struct AdamW {
    pub params: ParamsAdamW,
    /// Updates taken so far (bias correction uses it).
    pub step: usize,
    /// Per variable name: first and second moments.
    moments: HashMap<String, (Tensor, Tensor)>,
}

impl AdamW {
    pub fn new(params: ParamsAdamW) -> Self {
        Self {
            params,
            step: 0,
            moments: HashMap::new(),
        }
    }

    /// One update of every variable that has a gradient, each in one pass over its values (as
    /// tensor ops it would be a dozen full-size passes per variable, a tenth of a small model's step).
    pub fn update(&mut self, vars: &[(String, Var)], grads: &[Option<Tensor>]) -> Result<()> {
        self.step += 1;
        let p = &self.params;
        let t = self.step as i32;
        let rule = Rule {
            beta1: p.beta1 as f32,
            beta2: p.beta2 as f32,
            scale_m: (1.0 / (1.0 - p.beta1.powi(t))) as f32,
            scale_v: (1.0 / (1.0 - p.beta2.powi(t))) as f32,
            eps: p.eps as f32,
            lr: p.lr as f32,
        };
        for ((name, var), grad) in vars.iter().zip(grads) {
            let Some(g) = grad else { continue };
            let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
            let g = values(g)?;
            let (mut m, mut v) = match self.moments.remove(name) {
                Some((m, v)) => (values(&m)?, values(&v)?),
                None => (vec![0f32; g.len()], vec![0f32; g.len()]),
            };
            let mut w = values(var.as_tensor())?;
            let decay = if decays(name) { p.weight_decay } else { 0.0 };
            rule.apply(&mut w, &mut m, &mut v, &g, (1.0 - p.lr * decay) as f32);
            let shape = var.as_tensor().shape().clone();
            let tensor = |x: Vec<f32>| Tensor::from_vec(x, shape.clone(), &Device::Cpu);
            var.set(&tensor(w)?)?;
            self.moments.insert(name.clone(), (tensor(m)?, tensor(v)?));
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (name, (m, v)) in &self.moments {
            tensors.insert(format!("exp_avg.{name}"), m.clone());
            tensors.insert(format!("exp_avg_sq.{name}"), v.clone());
        }
        Ok(bge_rerank_engine::safetensors_file::save(&tensors, path)?)
    }

    pub fn load(&mut self, path: &Path, step: usize) -> Result<()> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|e| {
            TrainError::Invalid(format!(
                "{}: cannot read optimizer state: {e}",
                path.display()
            ))
        })?;
        self.moments.clear();
        for (key, m) in &tensors {
            if let Some(name) = key.strip_prefix("exp_avg.") {
                let v = tensors.get(&format!("exp_avg_sq.{name}")).ok_or_else(|| {
                    TrainError::Invalid(format!("{}: `{name}` lacks exp_avg_sq", path.display()))
                })?;
                self.moments
                    .insert(name.to_string(), (m.clone(), v.clone()));
            }
        }
        self.step = step;
        Ok(())
    }
}

/// AdamW's per-value arithmetic at one step.
struct Rule {
    beta1: f32,
    beta2: f32,
    /// Bias corrections 1 / (1 - beta^t).
    scale_m: f32,
    scale_v: f32,
    eps: f32,
    lr: f32,
}

impl Rule {
    /// m and v updated from g; w decayed by `keep` (1 - lr * weight decay), then stepped.
    fn apply(&self, w: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], keep: f32) {
        for (((w, m), v), g) in w.iter_mut().zip(m).zip(v).zip(g) {
            *m = *m * self.beta1 + g * (1.0 - self.beta1);
            *v = *v * self.beta2 + (g * g) * (1.0 - self.beta2);
            let step = (*m * self.scale_m) / ((*v * self.scale_v).sqrt() + self.eps);
            *w = *w * keep - step * self.lr;
        }
    }
}

/// Whether weight decay applies: the Hugging Face Trainer exempts biases and normalisation weights.
fn decays(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !(lower.ends_with("bias") || lower.contains("layernorm") || lower.contains("norm."))
}

/// The learning rate at `step` (0-based) of `total`: linear warm-up to `peak` over `warmup` steps,
/// then linear decay to zero at `total` (transformers' `get_linear_schedule_with_warmup`).
pub fn linear_schedule(peak: f64, step: usize, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return peak * step as f64 / warmup.max(1) as f64;
    }
    let remaining = total.saturating_sub(step) as f64;
    peak * (remaining / total.saturating_sub(warmup).max(1) as f64).max(0.0)
}

/// Scales the gradients so their global L2 norm is at most `max_norm` (torch's
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.iter().flatten() {
        total += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biases_and_norms_are_not_decayed() {
        assert!(decays(
            "roberta.encoder.layer.0.attention.self.query.weight"
        ));
        assert!(decays(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        ));
        assert!(!decays("classifier.out_proj.bias"));
        assert!(!decays("roberta.embeddings.LayerNorm.weight"));
        assert!(!decays("model.layers.0.input_layernorm.weight"));
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert_eq!(linear_schedule(1.0, 0, 10, 110), 0.0);
        assert_eq!(linear_schedule(1.0, 5, 10, 110), 0.5);
        assert_eq!(linear_schedule(1.0, 10, 10, 110), 1.0);
        assert_eq!(linear_schedule(1.0, 60, 10, 110), 0.5);
        assert_eq!(linear_schedule(1.0, 110, 10, 110), 0.0);
        assert_eq!(linear_schedule(2.0, 0, 0, 4), 2.0);
    }

    #[test]
    fn adamw_matches_candle_nn_and_clipping_bounds_the_norm() {
        use candle_nn::Optimizer;
        let dev = Device::Cpu;
        let start = Tensor::new(&[1.0f32, -2.0, 3.0], &dev).unwrap();
        let params = ParamsAdamW {
            lr: 0.1,
            weight_decay: 0.01,
            ..Default::default()
        };
        let ours = Var::from_tensor(&start).unwrap();
        let theirs = Var::from_tensor(&start).unwrap();
        let mut ours_opt = AdamW::new(params.clone());
        let mut theirs_opt = candle_nn::AdamW::new(vec![theirs.clone()], params).unwrap();
        for _ in 0..3 {
            let loss = ours.as_tensor().sqr().unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap().get(ours.as_tensor()).cloned();
            ours_opt
                .update(&[("w".into(), ours.clone())], &[g])
                .unwrap();
            let loss = theirs.as_tensor().sqr().unwrap().sum_all().unwrap();
            theirs_opt.backward_step(&loss).unwrap();
        }
        let (a, b): (Vec<f32>, Vec<f32>) = (
            ours.as_tensor().to_vec1().unwrap(),
            theirs.as_tensor().to_vec1().unwrap(),
        );
        // Three steps of 0.1 in f32, rounded in another order than candle-nn's tensor ops.
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
        let mut grads = vec![Some(Tensor::new(&[3.0f32, 4.0], &dev).unwrap()), None];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let clipped: Vec<f32> = grads[0].as_ref().unwrap().to_vec1().unwrap();
        assert!((clipped[0] - 0.6).abs() < 1e-5 && (clipped[1] - 0.8).abs() < 1e-5);
    }
}

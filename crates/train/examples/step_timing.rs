use bge_rerank_engine::trainable::{TrainSetup, TrainableModel, Tuning};
use bge_rerank_engine::InputOptions;
use std::time::Instant;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args[2].parse().unwrap();
    let len: usize = args[3].parse().unwrap();
    let dropout = args.get(4).is_some();
    let model = TrainableModel::load(&args[1], TrainSetup { tuning: Tuning::Full, seed: 1, dropout }).unwrap();
    let text = "word ".repeat(len);
    let pairs: Vec<(&str, &str)> = (0..n).map(|_| ("query text", text.as_str())).collect();
    let inputs = model.build_inputs(&pairs, &InputOptions { max_length: len, ..Default::default() }).unwrap();
    let refs: Vec<_> = inputs.iter().collect();
    for _ in 0..2 {
        let t = Instant::now();
        let logits = model.logits(&refs).unwrap();
        let loss = bge_rerank_train::loss::batch_loss(&logits, 8, None).unwrap();
        let _ = loss.to_vec0::<f32>();
        let f = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = loss.backward().unwrap();
        let b = t.elapsed().as_secs_f64();
        drop(g);
        eprintln!("forward {f:.2}s backward {b:.2}s ({} tokens)", inputs.iter().map(|i| i.len()).sum::<usize>());
    }
}

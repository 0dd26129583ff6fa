//! `bge-rerank tokenize`: the exact, unpadded token ids the model reads for each pair.

use clap::Args;
use serde_json::{json, Value};

use crate::jsonl::{read_pairs, write_lines, PairLines};
use crate::model_args::{InputArgs, ModelArgs, PairFiles};

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    files: PairFiles,
    #[command(flatten)]
    inputs: InputArgs,
}

pub fn run(args: TokenizeArgs) -> anyhow::Result<()> {
    let PairLines { objects, pairs } = read_pairs(&args.files.input)?;
    // Token ids need config.json and the tokenizer files only: the weights are not read, unless
    // cutoff layers are asked for (they do not change the ids, but a request the model cannot
    // honour is still an error, and only the model knows its layers).
    if let Some(layers) = &args.inputs.cutoff_layers {
        args.model.load()?.resolve_layers(Some(layers))?;
    }
    let (_, builder) = bge_rerank_engine::model_folder::inputs_only(&args.model.model)?;
    let inputs = builder.build(&pairs, &args.inputs.options())?;
    let lines = objects.into_iter().zip(inputs).map(|(mut object, input)| {
        object.insert("input_ids".into(), json!(input.ids));
        Value::Object(object).to_string()
    });
    write_lines(&args.files.output, lines)
}

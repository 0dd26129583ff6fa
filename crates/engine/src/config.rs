//! Reading config.json far enough to choose the model family; each family parses the rest itself.

use std::path::Path;

use crate::error::{read_json, Error, Result};

/// The architectures (config.json `architectures`) this engine scores with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    XlmRobertaForSequenceClassification,
    BertForSequenceClassification,
    /// A bare encoder (no classification head): loadable, e.g. as a start for fine-tuning.
    XlmRobertaModel,
    BertModel,
    /// bge-reranker-v2-gemma.
    GemmaForCausalLM,
    /// bge-reranker-v2-minicpm-layerwise.
    LayerWiseMiniCPMForCausalLM,
}

impl Architecture {
    const ALL: [(Architecture, &'static str); 6] = [
        (
            Self::XlmRobertaForSequenceClassification,
            "XLMRobertaForSequenceClassification",
        ),
        (
            Self::BertForSequenceClassification,
            "BertForSequenceClassification",
        ),
        (Self::XlmRobertaModel, "XLMRobertaModel"),
        (Self::BertModel, "BertModel"),
        (Self::GemmaForCausalLM, "GemmaForCausalLM"),
        (
            Self::LayerWiseMiniCPMForCausalLM,
            "LayerWiseMiniCPMForCausalLM",
        ),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(a, _)| *a == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }

    pub fn supported_names() -> Vec<&'static str> {
        Self::ALL.iter().map(|(_, n)| *n).collect()
    }

    /// Whether the checkpoint carries the head that turns the encoder into a reranker.
    pub fn has_score_head(self) -> bool {
        !matches!(self, Self::XlmRobertaModel | Self::BertModel)
    }

    /// Reads `architectures` (or, failing that, `model_type`) from config.json.
    pub fn from_config_file(path: &Path) -> Result<Self> {
        let raw: serde_json::Value = read_json(path)?;
        let names: Vec<String> = match raw.get("architectures") {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(_) => {
                return Err(Error::Config {
                    path: path.into(),
                    message: "`architectures` must be a list of strings".into(),
                })
            }
            None => Vec::new(),
        };
        if names.is_empty() {
            // Some re-saved checkpoints omit `architectures`; model_type alone means a bare encoder.
            return match raw.get("model_type").and_then(|v| v.as_str()) {
                Some("xlm-roberta") => Ok(Self::XlmRobertaModel),
                Some("bert") => Ok(Self::BertModel),
                other => Err(Error::Config {
                    path: path.into(),
                    message: format!(
                        "no `architectures` list (model_type {other:?}); supported: {}",
                        Self::supported_names().join(", ")
                    ),
                }),
            };
        }
        for name in &names {
            if let Some((arch, _)) = Self::ALL.iter().find(|(_, n)| n == name) {
                return Ok(*arch);
            }
        }
        Err(Error::UnsupportedArchitecture {
            found: names.join(", "),
            path: path.into(),
            supported: Self::supported_names(),
        })
    }
}

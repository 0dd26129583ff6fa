//! Pairs -> token ids, exactly as FlagEmbedding builds them.
//!
//! Encoder rerankers (`FlagReranker`): the query is tokenized alone without special tokens and cut to
//! `query_max_length` (default `max_length * 3 / 4`), the passage alone and cut to `max_length`; then the
//! tokenizer's post-processor assembles `<s> q </s></s> p </s>`, cutting only the passage to fit
//! `max_length` -- by transformers' legacy rule, which cuts nothing at all when the passage is not longer
//! than the overflow (the input then exceeds `max_length`).
//!
//! LLM rerankers (`FlagLLMReranker`, `LayerWiseFlagLLMReranker`): "A: " + query and "B: " + passage are
//! tokenized alone (the query budget counts "A: "); `[bos] + query` and `sep + passage` are cut
//! `only_second` (same legacy rule) to `max_length + len(sep) + len(prompt)`, then `sep + prompt` is
//! appended. The separator is the tokenizer's "\n"; bos comes first (Gemma: only when it exists and
//! differs from pad; layerwise: always).

use std::path::Path;

use tokenizers::{Encoding, Tokenizer, TruncationDirection};

use crate::error::{Error, Result};

/// What the model reads for one pair: unpadded token ids and their segment ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInput {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    /// Whether the query or the passage lost tokens to the length limits.
    pub truncated: bool,
}

impl ModelInput {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The knobs FlagEmbedding exposes for building inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputOptions {
    pub max_length: usize,
    /// Token budget of the query; `None` means `max_length * 3 / 4`.
    pub query_max_length: Option<usize>,
    /// LLM rerankers' instruction; `None` means FlagEmbedding's default.
    pub prompt: Option<String>,
    /// Tokens of a passage kept at most before the pair is assembled (Cohere's
    /// `max_tokens_per_doc`); `None` means max_length.
    pub passage_max_length: Option<usize>,
}

impl Default for InputOptions {
    fn default() -> Self {
        Self {
            max_length: 512,
            query_max_length: None,
            prompt: None,
            passage_max_length: None,
        }
    }
}

/// FlagEmbedding's default instruction for the LLM rerankers.
pub const DEFAULT_PROMPT: &str = "Given a query A and a passage B, determine whether the passage \
contains an answer to the query by providing a prediction of either 'Yes' or 'No'.";

impl InputOptions {
    pub fn query_budget(&self) -> usize {
        self.query_max_length.unwrap_or(self.max_length * 3 / 4)
    }

    /// Tokens of a passage kept before the pair is assembled.
    pub fn passage_budget(&self) -> usize {
        self.passage_max_length
            .map_or(self.max_length, |cap| cap.min(self.max_length))
    }

    pub fn validate(&self) -> Result<()> {
        if self.max_length == 0 {
            return Err(Error::InvalidOption("max_length must be at least 1".into()));
        }
        if self.query_max_length == Some(0) {
            return Err(Error::InvalidOption(
                "query_max_length must be at least 1".into(),
            ));
        }
        if self.passage_max_length == Some(0) {
            return Err(Error::InvalidOption(
                "a passage's token limit (max_tokens_per_doc) must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Loads tokenizer.json with its own padding and truncation switched off: the builder does both.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if !path.is_file() {
        return Err(Error::Tokenizer {
            path: path.into(),
            message: "file not found (the model folder needs the fast tokenizer's tokenizer.json)"
                .into(),
        });
    }
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
        path: path.into(),
        message: e.to_string(),
    })?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| Error::Tokenizer {
            path: path.into(),
            message: e.to_string(),
        })?;
    Ok(tokenizer)
}

/// A token named in tokenizer_config.json or special_tokens_map.json (`"bos_token"`, ...), as an id.
pub fn special_token_id(model_dir: &Path, tokenizer: &Tokenizer, key: &str) -> Option<u32> {
    for file in ["tokenizer_config.json", "special_tokens_map.json"] {
        let Ok(text) = std::fs::read_to_string(model_dir.join(file)) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let content = match json.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.as_str()),
            Some(serde_json::Value::Object(o)) => o.get("content").and_then(|c| c.as_str()),
            _ => None,
        };
        if let Some(content) = content {
            return tokenizer.token_to_id(content);
        }
    }
    None
}

/// How a family lays a pair out.
enum PairStyle {
    /// Special tokens the post-processor adds around a pair (4 for XLM-R, 3 for BERT).
    Encoder { pair_specials: usize },
    /// "A: q" / "B: p" with a separator and an instruction.
    Llm { bos: Option<u32>, sep: Vec<u32> },
}

/// Builds model inputs from (query, passage) pairs, the way FlagEmbedding does for the family.
pub struct InputBuilder {
    tokenizer: Tokenizer,
    style: PairStyle,
}

impl InputBuilder {
    pub fn for_encoder(tokenizer: Tokenizer, tokenizer_path: &Path) -> Result<Self> {
        let pair_specials = match tokenizer.get_post_processor() {
            Some(processor) => tokenizers::PostProcessor::added_tokens(processor, true),
            None => {
                return Err(Error::Tokenizer {
                    path: tokenizer_path.into(),
                    message: "no post_processor: a cross-encoder's tokenizer must know how to \
                              join a query and a passage"
                        .into(),
                })
            }
        };
        Ok(Self {
            tokenizer,
            style: PairStyle::Encoder { pair_specials },
        })
    }

    /// For the LLM rerankers; `bos` is prepended to the query when given.
    pub fn for_llm(tokenizer: Tokenizer, bos: Option<u32>) -> Result<Self> {
        let sep = encode_ids(&tokenizer, "\n")?;
        Ok(Self {
            tokenizer,
            style: PairStyle::Llm { bos, sep },
        })
    }

    /// The first id of `text` tokenized without special tokens (FlagEmbedding's "Yes" token).
    pub fn first_token_id(&self, text: &str) -> Result<u32> {
        encode_ids(&self.tokenizer, text)?
            .first()
            .copied()
            .ok_or_else(|| Error::Tokenize(format!("{text:?} tokenizes to nothing")))
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn build<Q: AsRef<str>, P: AsRef<str>>(
        &self,
        pairs: &[(Q, P)],
        options: &InputOptions,
    ) -> Result<Vec<ModelInput>> {
        options.validate()?;
        match &self.style {
            PairStyle::Encoder { pair_specials } => {
                if options.prompt.is_some() {
                    return Err(Error::InvalidOption(
                        "a prompt applies to the LLM rerankers only, not to cross-encoders".into(),
                    ));
                }
                let queries = self.encode_texts(pairs.iter().map(|(q, _)| q.as_ref()).collect())?;
                let passages =
                    self.encode_texts(pairs.iter().map(|(_, p)| p.as_ref()).collect())?;
                queries
                    .into_iter()
                    .zip(passages)
                    .map(|(query, passage)| self.assemble(query, passage, *pair_specials, options))
                    .collect()
            }
            PairStyle::Llm { bos, sep } => {
                let prompt = encode_ids(
                    &self.tokenizer,
                    options.prompt.as_deref().unwrap_or(DEFAULT_PROMPT),
                )?;
                let queries = self.encode_texts(
                    pairs
                        .iter()
                        .map(|(q, _)| format!("A: {}", q.as_ref()))
                        .collect(),
                )?;
                let passages = self.encode_texts(
                    pairs
                        .iter()
                        .map(|(_, p)| format!("B: {}", p.as_ref()))
                        .collect(),
                )?;
                let limit = options.max_length + sep.len() + prompt.len();
                Ok(queries
                    .into_iter()
                    .zip(passages)
                    .map(|(query, passage)| {
                        let mut ids: Vec<u32> = bos.iter().copied().collect();
                        let query_kept = query.len().min(options.query_budget());
                        ids.extend(&query.get_ids()[..query_kept]);
                        let passage_kept = passage.len().min(options.passage_budget());
                        let passage_ids = &passage.get_ids()[..passage_kept];
                        let second = sep.len() + passage_ids.len();
                        let keep = only_second_keep(ids.len(), second, limit);
                        ids.extend(sep.iter().chain(passage_ids).take(keep));
                        ids.extend(sep);
                        ids.extend(&prompt);
                        ModelInput {
                            type_ids: vec![0; ids.len()],
                            truncated: query_kept < query.len()
                                || passage_kept < passage.len()
                                || keep < second,
                            ids,
                        }
                    })
                    .collect())
            }
        }
    }

    /// Tokenizes texts without special tokens (borrowed or owned: no copy is made for the encoders).
    fn encode_texts<'s, T>(&self, texts: Vec<T>) -> Result<Vec<Encoding>>
    where
        T: Into<tokenizers::EncodeInput<'s>> + Send,
    {
        self.tokenizer
            .encode_batch(texts, false)
            .map_err(|e| Error::Tokenize(e.to_string()))
    }

    fn assemble(
        &self,
        mut query: Encoding,
        mut passage: Encoding,
        pair_specials: usize,
        options: &InputOptions,
    ) -> Result<ModelInput> {
        let (query_len, passage_len) = (query.len(), passage.len());
        query.truncate(options.query_budget(), 0, TruncationDirection::Right);
        passage.truncate(options.passage_budget(), 0, TruncationDirection::Right);
        let keep = only_second_keep(
            query.len() + pair_specials,
            passage.len(),
            options.max_length,
        );
        passage.truncate(keep, 0, TruncationDirection::Right);
        let truncated = query.len() < query_len || passage.len() < passage_len;
        let pair = self
            .tokenizer
            .post_process(query, Some(passage), true)
            .map_err(|e| Error::Tokenize(e.to_string()))?;
        Ok(ModelInput {
            ids: pair.get_ids().to_vec(),
            type_ids: pair.get_type_ids().to_vec(),
            truncated,
        })
    }
}

fn encode_ids(tokenizer: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    Ok(tokenizer
        .encode(text, false)
        .map_err(|e| Error::Tokenize(e.to_string()))?
        .get_ids()
        .to_vec())
}

/// How many tokens of the second sequence survive transformers' `only_second` truncation to `limit`,
/// given `fixed` tokens that are never cut. Legacy rule: the second sequence is cut only when it is
/// strictly longer than the overflow; otherwise it is left whole and the input exceeds `limit`.
pub fn only_second_keep(fixed: usize, second: usize, limit: usize) -> usize {
    let total = fixed + second;
    if total <= limit {
        return second;
    }
    let overflow = total - limit;
    if second > overflow {
        second - overflow
    } else {
        second
    }
}

#[cfg(test)]
mod tests {
    use super::only_second_keep;

    #[test]
    fn legacy_only_second_rule() {
        assert_eq!(only_second_keep(10, 5, 20), 5);
        assert_eq!(only_second_keep(10, 15, 20), 10);
        // passage (5) not longer than the overflow (5): nothing is cut
        assert_eq!(only_second_keep(20, 5, 20), 5);
        assert_eq!(only_second_keep(16, 16, 16), 16);
        assert_eq!(only_second_keep(15, 17, 16), 1);
        assert_eq!(only_second_keep(16, 17, 16), 17);
    }
}

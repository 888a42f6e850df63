//! The price table behind each call's estimated cost: built-in list prices plus `INFERENCE_PRICES`.

use super::{Provider, Usage};

/// List prices (USD per 1M tokens: input, output) at the time of writing. They change: override or extend
/// them with `INFERENCE_PRICES` rather than trusting these for billing.
const BUILT_IN: &[(Provider, &str, f64, f64)] = &[
    (Provider::OpenAi, "gpt-4.1", 2.00, 8.00),
    (Provider::OpenAi, "gpt-4.1-mini", 0.40, 1.60),
    (Provider::OpenAi, "gpt-4.1-nano", 0.10, 0.40),
    (Provider::OpenAi, "gpt-4o", 2.50, 10.00),
    (Provider::OpenAi, "gpt-4o-mini", 0.15, 0.60),
    (Provider::OpenAi, "o4-mini", 1.10, 4.40),
    (Provider::Anthropic, "claude-sonnet-4", 3.00, 15.00),
    (Provider::Anthropic, "claude-opus-4", 15.00, 75.00),
    (Provider::Anthropic, "claude-3-7-sonnet", 3.00, 15.00),
    (Provider::Anthropic, "claude-3-5-haiku", 0.80, 4.00),
    (Provider::Gemini, "gemini-2.5-pro", 1.25, 10.00),
    (Provider::Gemini, "gemini-2.5-flash", 0.30, 2.50),
    (Provider::Gemini, "gemini-2.0-flash", 0.10, 0.40),
];

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    provider: Provider,
    model: String,
    /// USD per 1M tokens, which is micro-USD per token.
    input: f64,
    output: f64,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    entries: Vec<Entry>,
}

impl Default for PriceTable {
    fn default() -> Self {
        Self {
            entries: BUILT_IN
                .iter()
                .map(|&(provider, model, input, output)| Entry {
                    provider,
                    model: model.to_string(),
                    input,
                    output,
                })
                .collect(),
        }
    }
}

impl PriceTable {
    /// The built-in table with `spec` (`provider/model=in:out,…`, USD per 1M tokens) added or replacing
    /// entries of the same provider and model.
    pub fn with_overrides(spec: &str) -> Result<Self, String> {
        let mut table = Self::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let entry = parse_entry(item)?;
            table
                .entries
                .retain(|e| !(e.provider == entry.provider && e.model == entry.model));
            table.entries.push(entry);
        }
        Ok(table)
    }

    /// Estimated cost of `usage` in micro-USD (rounded). A model the table does not know costs 0: the
    /// call is still recorded with its tokens, its cost is unknown rather than guessed.
    ///
    /// The model matches exactly, else by the longest known prefix (so dated ids such as
    /// `gpt-4.1-mini-2025-04-14` find `gpt-4.1-mini`).
    pub fn cost_micros(&self, p: Provider, model: &str, u: &Usage) -> i64 {
        let Some(e) = self.lookup(p, model) else {
            return 0;
        };
        let cost = u.input_tokens as f64 * e.input + u.output_tokens as f64 * e.output;
        if cost.is_finite() && cost >= 0.0 {
            cost.round().min(i64::MAX as f64) as i64
        } else {
            0
        }
    }

    fn lookup(&self, p: Provider, model: &str) -> Option<&Entry> {
        let mine = || self.entries.iter().filter(move |e| e.provider == p);
        mine().find(|e| e.model == model).or_else(|| {
            mine()
                .filter(|e| model.starts_with(&e.model))
                .max_by_key(|e| e.model.len())
        })
    }
}

fn parse_entry(item: &str) -> Result<Entry, String> {
    let bad = || format!("{item:?}: expected provider/model=input:output (USD per 1M tokens)");
    let (key, prices) = item.split_once('=').ok_or_else(bad)?;
    let (provider, model) = key.trim().split_once('/').ok_or_else(bad)?;
    let provider: Provider = provider.trim().parse().map_err(|_| bad())?;
    let model = model.trim();
    let (input, output) = prices.split_once(':').ok_or_else(bad)?;
    let price = |s: &str| {
        s.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(bad)
    };
    if model.is_empty() {
        return Err(bad());
    }
    Ok(Entry {
        provider,
        model: model.to_string(),
        input: price(input)?,
        output: price(output)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(i: u64, o: u64) -> Usage {
        Usage {
            input_tokens: i,
            output_tokens: o,
        }
    }

    #[test]
    fn exact_then_longest_prefix_then_zero() {
        let t = PriceTable::default();
        // 1M in at 0.40 + 1M out at 1.60 = 2.00 USD.
        assert_eq!(
            t.cost_micros(
                Provider::OpenAi,
                "gpt-4.1-mini",
                &usage(1_000_000, 1_000_000)
            ),
            2_000_000
        );
        assert_eq!(
            t.cost_micros(
                Provider::OpenAi,
                "gpt-4.1-mini-2025-04-14",
                &usage(1000, 500)
            ),
            400 + 800
        );
        // `gpt-4o-mini-…` must not match the shorter `gpt-4o`.
        assert_eq!(
            t.cost_micros(
                Provider::OpenAi,
                "gpt-4o-mini-2024-07-18",
                &usage(1_000_000, 0)
            ),
            150_000
        );
        assert_eq!(
            t.cost_micros(
                Provider::Anthropic,
                "claude-sonnet-4-20250514",
                &usage(10, 10)
            ),
            180
        );
        assert_eq!(
            t.cost_micros(Provider::OpenAi, "llama3", &usage(1000, 1000)),
            0
        );
        // Per provider: a Gemini model name under OpenAI is unknown.
        assert_eq!(
            t.cost_micros(Provider::OpenAi, "gemini-2.5-pro", &usage(1000, 1000)),
            0
        );
    }

    #[test]
    fn overrides_add_and_replace() {
        let t = PriceTable::with_overrides(
            " openai/llama3=1:2 , openai/gpt-4o=0:0,gemini/x-1 = 0.5 : 0.25",
        )
        .unwrap();
        assert_eq!(
            t.cost_micros(Provider::OpenAi, "llama3", &usage(10, 10)),
            30
        );
        assert_eq!(t.cost_micros(Provider::OpenAi, "gpt-4o", &usage(10, 10)), 0);
        assert_eq!(t.cost_micros(Provider::Gemini, "x-1", &usage(4, 4)), 3);
        for bad in [
            "openai/gpt=1",
            "gpt=1:2",
            "mistral/x=1:2",
            "openai/x=-1:2",
            "openai/=1:1",
        ] {
            assert!(PriceTable::with_overrides(bad).is_err(), "{bad}");
        }
    }
}

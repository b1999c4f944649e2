//! vLLM's names for the engine gauges, beside tessera's own, so that routers
//! built for vLLM read tessera unchanged: the Gateway API Inference
//! Extension's endpoint picker (and llm-d, KServe's autoscaling examples)
//! scrape `vllm:num_requests_waiting`, `vllm:num_requests_running` and the KV
//! cache's usage to pick the least loaded replica.
//!
//! The aliases are copies of tessera's families taken from the same gather,
//! renamed, with the `model` label called `model_name` as vLLM calls it (the
//! `version` label stays), so each alias holds exactly its tessera gauge's
//! value in every scrape.
//!
//! Not offered: `vllm:lora_requests_info` (tessera serves no adapters, and
//! the protocol asks for it only from servers that do) and the optional
//! `vllm:cache_config_info` (the picker then takes the block size from its
//! own configuration).

use prometheus::proto::{LabelPair, MetricFamily};

/// tessera's family, the vLLM name it is also exported under, and that
/// name's help text.
const ALIASES: &[(&str, &str, &str)] = &[
    (
        "tessera_requests_waiting",
        "vllm:num_requests_waiting",
        "Number of requests waiting to be processed (alias of tessera_requests_waiting).",
    ),
    (
        "tessera_requests_running",
        "vllm:num_requests_running",
        "Number of requests in model execution batches (alias of tessera_requests_running).",
    ),
    (
        "tessera_kv_cache_usage_ratio",
        "vllm:kv_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage (alias of tessera_kv_cache_usage_ratio).",
    ),
    // The name vLLM used before 0.10 and endpoint pickers of that time read.
    (
        "tessera_kv_cache_usage_ratio",
        "vllm:gpu_cache_usage_perc",
        "KV-cache usage. 1 means 100 percent usage (alias of tessera_kv_cache_usage_ratio).",
    ),
];

/// The vLLM-named copies of the families in `families` that have one.
pub(super) fn aliases(families: &[MetricFamily]) -> Vec<MetricFamily> {
    ALIASES
        .iter()
        .filter_map(|(ours, theirs, help)| {
            let family = families.iter().find(|f| f.name() == *ours)?;
            let mut alias = family.clone();
            alias.set_name((*theirs).to_string());
            alias.set_help((*help).to_string());
            for metric in alias.mut_metric() {
                let mut labels = metric.take_label();
                for label in &mut labels {
                    if label.name() == "model" {
                        label.set_name("model_name".to_string());
                    }
                }
                // The text format wants label names in order; the rename may
                // have moved one.
                labels.sort_by(|a: &LabelPair, b: &LabelPair| a.name().cmp(b.name()));
                metric.set_label(labels);
            }
            Some(alias)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry, TextEncoder};

    use super::*;

    #[test]
    fn aliases_carry_the_values_under_model_name() {
        let r = Registry::new_custom(Some("tessera".into()), None).expect("registry");
        let waiting = IntGaugeVec::new(Opts::new("requests_waiting", "w"), &["model"]).expect("g");
        let kv = GaugeVec::new(Opts::new("kv_cache_usage_ratio", "k"), &["model"]).expect("g");
        r.register(Box::new(waiting.clone())).expect("registers");
        r.register(Box::new(kv.clone())).expect("registers");
        waiting.with_label_values(&["m"]).set(7);
        kv.with_label_values(&["m"]).set(0.25);
        let mut families = r.gather();
        families.extend(aliases(&families));
        let text = TextEncoder::new()
            .encode_to_string(&families)
            .expect("encodes");
        assert!(
            text.contains("\nvllm:num_requests_waiting{model_name=\"m\"} 7\n"),
            "{text}"
        );
        assert!(text.contains("\nvllm:kv_cache_usage_perc{model_name=\"m\"} 0.25\n"));
        assert!(text.contains("\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.25\n"));
        assert!(text.contains("# TYPE vllm:num_requests_waiting gauge"));
        // Absent from the source, absent from the aliases; the originals stay.
        assert!(!text.contains("vllm:num_requests_running"));
        assert!(text.contains("tessera_requests_waiting{model=\"m\"} 7"));
    }
}

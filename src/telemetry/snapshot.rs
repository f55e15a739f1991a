//! Metrics that are state, read when scraped: a worker's own engine (jobs, KV cache, prefix
//! cache, batch sizes) where the worker runs, and the pool as heartbeats report it on fronts
//! and coordinators. Worker figures carry `worker` and `model` labels.

use super::metrics::Family;
use crate::engine::batch::BATCH_BUCKETS;
use crate::protocol::{WorkerInfo, WorkerLoad};

/// The engines of the workers this process runs.
pub fn workers(out: &mut String, workers: &[(WorkerInfo, WorkerLoad)]) {
    type Figure = fn(&WorkerLoad) -> String;
    let plain: [(&str, &str, &str, Figure); 9] = [
        (
            "supernet:num_requests_running",
            "gauge",
            "Sequences in the worker's running batch.",
            |l| l.running.to_string(),
        ),
        (
            "supernet:num_requests_waiting",
            "gauge",
            "Jobs the worker holds that are not running yet.",
            |l| l.queued.to_string(),
        ),
        (
            "supernet:kv_cache_usage_perc",
            "gauge",
            "Share of the worker's KV-cache blocks in use (0 to 1).",
            |l| {
                format!(
                    "{:.4}",
                    l.batch.kv_blocks_used as f64 / l.batch.kv_blocks_total.max(1) as f64
                )
            },
        ),
        (
            "supernet:prefix_cache_queries_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            |l| l.batch.prefix_query_tokens.to_string(),
        ),
        (
            "supernet:prefix_cache_hits_total",
            "counter",
            "Prompt tokens found in the prefix cache.",
            |l| l.batch.prefix_hit_tokens.to_string(),
        ),
        (
            "supernet:images_encoded_total",
            "counter",
            "Images the worker's vision tower encoded.",
            |l| l.batch.images_encoded.to_string(),
        ),
        (
            "supernet:image_cache_hits_total",
            "counter",
            "Images whose rows the prefix cache already held, so nothing was encoded.",
            |l| l.batch.images_cached.to_string(),
        ),
        (
            "supernet:num_preemptions_total",
            "counter",
            "Sequences preempted because the KV pool ran out.",
            |l| l.batch.preemptions.to_string(),
        ),
        (
            "supernet:worker_decode_tokens_per_second",
            "gauge",
            "Tokens per second over all running sequences, recent steps.",
            |l| format!("{:.1}", l.tokens_per_s),
        ),
    ];
    for (name, kind, help, figure) in plain {
        let mut f = Family::new(out, name, kind, help);
        for (i, l) in workers {
            f.sample(
                "",
                &[("worker", &i.worker_id), ("model", &i.model_id)],
                figure(l),
            );
        }
    }
    let mut f = Family::new(
        out,
        "supernet:worker_kv_blocks",
        "gauge",
        "KV-cache blocks (16 positions each), by state.",
    );
    for (i, l) in workers {
        for (state, n) in [
            ("used", l.batch.kv_blocks_used),
            ("total", l.batch.kv_blocks_total),
        ] {
            f.sample(
                "",
                &[
                    ("worker", &i.worker_id),
                    ("model", &i.model_id),
                    ("state", state),
                ],
                n,
            );
        }
    }
    let mut f = Family::new(
        out,
        "supernet:worker_jobs_finished_total",
        "counter",
        "Jobs the worker has finished, by outcome.",
    );
    for (i, l) in workers {
        for (outcome, n) in [("completed", l.completed), ("cancelled", l.cancelled)] {
            f.sample(
                "",
                &[
                    ("worker", &i.worker_id),
                    ("model", &i.model_id),
                    ("outcome", outcome),
                ],
                n,
            );
        }
    }
    let mut f = Family::new(
        out,
        "supernet:worker_batch_size",
        "histogram",
        "Sequences per forward step.",
    );
    for (i, l) in workers {
        let labels = [
            ("worker", i.worker_id.as_str()),
            ("model", i.model_id.as_str()),
        ];
        let mut cumulative = 0;
        for (&n, le) in l.batch.batch_sizes.iter().zip(
            BATCH_BUCKETS
                .iter()
                .map(|b| b.to_string())
                .chain(["+Inf".to_string()]),
        ) {
            cumulative += n;
            f.sample("_bucket", &[labels[0], labels[1], ("le", &le)], cumulative);
        }
        f.sample("_sum", &labels, l.batch.batch_sum);
        f.sample("_count", &labels, l.batch.steps);
    }
}

/// The pool as this node knows it: live workers by model and state, and each one's jobs.
pub fn pool(out: &mut String, workers: &[(WorkerInfo, WorkerLoad)]) {
    let mut by_state: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for (i, l) in workers {
        *by_state
            .entry((
                i.model_id.as_str(),
                if l.draining { "draining" } else { "serving" },
            ))
            .or_default() += 1;
    }
    let mut f = Family::new(
        out,
        "supernet:workers",
        "gauge",
        "Live workers, by model and state (serving, draining).",
    );
    for ((model, state), n) in by_state {
        f.sample("", &[("model", model), ("state", state)], n);
    }
    let mut f = Family::new(
        out,
        "supernet:pool_worker_jobs",
        "gauge",
        "Jobs each live worker holds, by state, as its last heartbeat said.",
    );
    for (i, l) in workers {
        for (state, n) in [("queued", l.queued), ("running", l.running)] {
            f.sample(
                "",
                &[
                    ("worker", &i.worker_id),
                    ("model", &i.model_id),
                    ("state", state),
                ],
                n,
            );
        }
    }
}

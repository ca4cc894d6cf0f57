//! Measures DESIGN's "no pooled connection checked out while a provider is
//! called": a wiremock responder samples the code-under-test's pools at the moment
//! each provider request arrives. One instance serves one request at a time, so
//! any connection checked out then is held across the provider call.

use std::sync::{Arc, Mutex};

use shared::db::Db;
use wiremock::{Request, Respond, ResponseTemplate};

/// The pools to watch (one per simulated Lambda instance) and what was seen.
#[derive(Clone, Default)]
pub struct PoolProbe {
    pools: Vec<Db>,
    seen: Arc<Mutex<Vec<usize>>>,
}

impl PoolProbe {
    pub fn new(pools: impl IntoIterator<Item = Db>) -> Self {
        Self {
            pools: pools.into_iter().collect(),
            seen: Arc::default(),
        }
    }

    /// Record how many connections are checked out of the pools now.
    pub fn sample(&self) {
        let out = self
            .pools
            .iter()
            .map(|db| {
                let s = db.status();
                s.size.saturating_sub(s.available)
            })
            .sum();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(out);
    }

    /// Checked-out counts, one per provider request seen.
    pub fn samples(&self) -> Vec<usize> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Answer with `template` after sampling.
    pub fn answering(&self, template: ResponseTemplate) -> Probed {
        Probed {
            probe: self.clone(),
            template,
        }
    }
}

/// A fixed answer that samples the pools first.
pub struct Probed {
    probe: PoolProbe,
    template: ResponseTemplate,
}

impl Respond for Probed {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.probe.sample();
        self.template.clone()
    }
}

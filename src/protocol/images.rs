//! A job's images travel as blobs beside the streams, not inside its messages: its session
//! stores them once when the turn starts, keeps them while the turn lives and drops them
//! when it ends; every attempt's placement names them by key ([`JobImage::blob`]), and the
//! worker an attempt goes to reads them. A failover thus moves a few keys, not megabytes,
//! and the coordinator's stream and the workers' inboxes never hold image bytes.
//!
//! The blobs expire on their own ([`TTL`], renewed with the hold), so a front that dies
//! mid-turn leaves nothing behind for long.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use super::job::{ImageRunSpec, JobImage};
use super::VERSION;
use crate::bus::{Bus, BusError};

/// How long a stored image outlives the last renewal of its turn.
pub const TTL: Duration = Duration::from_secs(600);

/// The key of job `job_id`'s `i`th image.
pub fn key(job_id: &str, i: usize) -> String {
    format!("sn:v{VERSION}:image:{job_id}:{i}")
}

/// One image of a prompt as its session holds it: the bytes the client sent, and where its
/// rows sit in the prompt.
#[derive(Debug, Clone)]
pub struct PromptImage {
    pub data: Arc<Vec<u8>>,
    pub runs: Vec<ImageRunSpec>,
}

/// A job's images, on the session's side: what it stores, keeps and drops.
#[derive(Debug)]
pub struct JobImages {
    blobs: Vec<(String, Arc<Vec<u8>>)>,
}

impl JobImages {
    /// The images of job `job_id`, and the references its placements carry.
    pub fn new(job_id: &str, images: Vec<PromptImage>) -> (Self, Vec<JobImage>) {
        let mut blobs = Vec::with_capacity(images.len());
        let mut refs = Vec::with_capacity(images.len());
        for (i, im) in images.into_iter().enumerate() {
            let blob = key(job_id, i);
            refs.push(JobImage {
                blob: blob.clone(),
                runs: im.runs,
            });
            blobs.push((blob, im.data));
        }
        (Self { blobs }, refs)
    }

    /// Stores every image, before the job's first placement.
    pub async fn store(&self, bus: &dyn Bus) -> Result<(), BusError> {
        let puts = self.blobs.iter().map(|(k, b)| bus.put_blob(k, b, TTL));
        join_all(puts).await.into_iter().collect()
    }

    /// Keeps the images for another [`TTL`]; one found gone (Redis lost it) is stored again.
    pub async fn keep(&self, bus: &dyn Bus) -> Result<(), BusError> {
        let kept = join_all(self.blobs.iter().map(|(k, _)| bus.keep_blob(k, TTL))).await;
        for ((k, b), kept) in self.blobs.iter().zip(kept) {
            if !kept? {
                bus.put_blob(k, b, TTL).await?;
            }
        }
        Ok(())
    }

    /// Drops the images: the turn is over and no attempt will read them again.
    pub async fn drop_all(&self, bus: &dyn Bus) {
        for (k, _) in &self.blobs {
            if let Err(e) = bus.drop_blob(k).await {
                tracing::warn!(blob = %k, "dropping a job's image (it expires anyway): {e}");
            }
        }
    }
}

/// The bytes of a job's images, in order, on the worker an attempt went to. Fails with the
/// reason when one cannot be read (its turn is over, or the bus failed).
pub async fn fetch(bus: &dyn Bus, images: &[JobImage]) -> Result<Vec<Vec<u8>>, String> {
    let got = join_all(images.iter().map(|im| bus.get_blob(&im.blob))).await;
    images
        .iter()
        .zip(got)
        .map(|(im, r)| match r {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(format!("image `{}` is gone (its turn ended)", im.blob)),
            Err(e) => Err(format!("reading image `{}`: {e}", im.blob)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::memory::MemoryBus;

    fn images() -> Vec<PromptImage> {
        (0..3u8)
            .map(|i| PromptImage {
                data: Arc::new(vec![i; 1000 + i as usize]),
                runs: vec![ImageRunSpec {
                    at: 10 * i as u32,
                    nx: 2,
                    ny: 3,
                }],
            })
            .collect()
    }

    #[tokio::test]
    async fn a_job_stores_its_images_once_and_each_attempt_reads_them_by_key() {
        let bus = MemoryBus::new();
        let (held, refs) = JobImages::new("job-1", images());
        assert_eq!(refs[1].blob, key("job-1", 1));
        assert_eq!(refs[2].runs, images()[2].runs);
        held.store(&bus).await.expect("store");
        let want: Vec<Vec<u8>> = images().iter().map(|im| im.data.to_vec()).collect();
        for _attempt in 0..2 {
            assert_eq!(fetch(&bus, &refs).await.expect("fetch"), want);
        }
        // Lost from the bus: keeping stores it again.
        bus.drop_blob(&refs[0].blob).await.expect("drop");
        held.keep(&bus).await.expect("keep");
        assert_eq!(fetch(&bus, &refs).await.expect("fetch"), want);
        held.drop_all(&bus).await;
        let gone = fetch(&bus, &refs).await.expect_err("dropped");
        assert!(gone.contains("job-1:0") && gone.contains("gone"), "{gone}");
    }
}

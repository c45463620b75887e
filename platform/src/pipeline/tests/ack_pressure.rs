//! A source that stops delivering while a window of positions is unacknowledged (like an
//! AMQP channel at its prefetch) must not wait for the file age: the pipeline commits as
//! soon as the source reports ack pressure.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};

use super::*;

/// Delivers at most `window` positions that are not yet acknowledged, and says so
/// through [`Source::ack_pressure`] once the window is full. Never ends (a broker).
struct WindowedSource {
    events: VecDeque<Event>,
    window: usize,
    unacked: usize,
    /// The last acknowledged offset, -1 before any ack.
    acked: Arc<AtomicI64>,
    /// How many events were handed to the pipeline.
    delivered: Arc<AtomicI64>,
}

#[async_trait]
impl Source for WindowedSource {
    async fn next_events(&mut self) -> Result<Option<Vec<Event>>, SourceError> {
        let room = self.window - self.unacked;
        if room == 0 || self.events.is_empty() {
            // Cancel-safe: nothing was taken.
            return std::future::pending().await;
        }
        let take = room.min(7).min(self.events.len());
        self.unacked += take;
        self.delivered
            .fetch_add(i64::try_from(take).unwrap(), Ordering::SeqCst);
        Ok(Some(self.events.drain(..take).collect()))
    }

    async fn ack(&mut self, delta: &CheckpointDelta) -> Result<(), SourceError> {
        for (_, range) in delta.iter() {
            self.unacked -= usize::try_from(range.last - range.first + 1).unwrap();
            self.acked.fetch_max(range.last, Ordering::SeqCst);
        }
        Ok(())
    }

    fn ack_pressure(&self, _pending: &CheckpointDelta) -> bool {
        self.unacked >= self.window
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_is_committed_before_the_file_age() {
    const EVENTS: i64 = 200;
    const WINDOW: i64 = 20;
    let dir = tempfile::tempdir().unwrap();
    // The default `max_file_age` (30 s): without the early commit, nothing would be
    // acknowledged before it, and the window of 20 would hold intake at 20 events.
    let spec = job(dir.path(), "exec cat", "");
    assert_eq!(spec.output.max_file_age, Duration::from_secs(30));
    let events = one_split_events(EVENTS);
    let acked = Arc::new(AtomicI64::new(-1));
    let delivered = Arc::new(AtomicI64::new(0));
    let source = WindowedSource {
        events: events.into(),
        window: usize::try_from(WINDOW).unwrap(),
        unacked: 0,
        acked: acked.clone(),
        delivered: delivered.clone(),
    };
    // Far below the file age, every event is delivered through the window of 20: every
    // event but the last window's passes it in early commits (what is left once the
    // source has nothing more to deliver is a trickle: it commits on the file age, or
    // here at the stop). Waiting for the acks alone would race the last deliveries.
    let (stats, _) = run_until_then_stop(
        &spec,
        Box::new(source),
        Duration::from_secs(15),
        || {
            delivered.load(Ordering::SeqCst) >= EVENTS
                && acked.load(Ordering::SeqCst) >= EVENTS - 1 - WINDOW
        },
        || {
            format!(
                "acknowledged through offset {} of {}: intake waits for the file age",
                acked.load(Ordering::SeqCst),
                EVENTS - 1
            )
        },
    )
    .await;
    let stats = stats.unwrap();
    assert_eq!(
        acked.load(Ordering::SeqCst),
        EVENTS - 1,
        "the stop commits the rest"
    );
    assert_eq!((stats.records_in, stats.rows_out), (200, 200));
    assert!(stats.commits >= 10, "{} commits", stats.commits);
    let rows: usize = parquet_files(&dir.path().join("out"))
        .iter()
        .map(|file| {
            let file = std::fs::File::open(file).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
            usize::try_from(
                parquet::file::reader::FileReader::metadata(&reader)
                    .file_metadata()
                    .num_rows(),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(rows, 200, "every event in the committed output once");
}

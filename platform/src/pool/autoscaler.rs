//! How many function instances a job should have, decided from its backlog and the
//! throughput of its instances.
//!
//! ```text
//! work     = records waiting at the source + queued in batches + in flight
//! lanes    = batches that could run right now (in flight + dispatchable under `ordering`)
//! need     = ceil(work / (records per second per instance × DRAIN_TARGET))  (lanes until measured)
//! raw      = 0 without work, else clamp(min(need, lanes), 1, ∞)
//! desired  = clamp(max(raw over the last STABILIZATION), min_instances, max_instances)
//! ```
//!
//! Scale-up is immediate (a larger `raw` wins at once); scale-down waits until `raw` has
//! been lower for the whole stabilisation window, so a backlog that flickers between
//! batches does not start and stop instances. The pool never stops a busy instance: a
//! lower `desired` only means idle instances are not replaced, and idle ones time out.
//! Pure logic, no clock of its own: callers pass `now`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::spec::ScalingSpec;

/// How quickly the autoscaler aims to drain the work it sees.
pub const DRAIN_TARGET: Duration = Duration::from_secs(1);
/// How long a lower instance count must hold before `desired` drops to it.
pub const STABILIZATION: Duration = Duration::from_secs(5);
/// Weight of the newest throughput sample in the moving average.
const RATE_WEIGHT: f64 = 0.3;

/// What the job has to do right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Records waiting at the source (Kafka lag, ready messages, pending objects), queued
    /// in batches, or being processed.
    pub work_records: u64,
    /// Batches that could run concurrently right now: in flight plus those the ordering
    /// rule lets start.
    pub lanes: u32,
}

/// The desired instance count of one job, with its throughput estimate.
#[derive(Debug)]
pub struct Autoscaler {
    min: u32,
    max: u32,
    /// Records per second one busy instance handles (moving average), once measured.
    rate: Option<f64>,
    /// Raw counts of the last [`STABILIZATION`], oldest first.
    history: VecDeque<(Instant, u32)>,
}

impl Autoscaler {
    pub fn new(spec: &ScalingSpec) -> Self {
        Self {
            min: spec.min_instances,
            max: spec.max_instances.max(1),
            rate: None,
            history: VecDeque::new(),
        }
    }

    /// Feeds one finished batch: `records` handled by one instance in `busy` time.
    pub fn observe(&mut self, records: usize, busy: Duration) {
        let seconds = busy.as_secs_f64();
        if records == 0 || seconds <= 0.0 {
            return;
        }
        let sample = records as f64 / seconds;
        self.rate = Some(match self.rate {
            Some(rate) => rate * (1.0 - RATE_WEIGHT) + sample * RATE_WEIGHT,
            None => sample,
        });
    }

    /// Records per second per instance, once a batch has been measured.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// The instance count for `load` at `now` (see the module docs).
    pub fn desired(&mut self, now: Instant, load: Load) -> u32 {
        let raw = self.raw(load);
        while let Some(&(at, _)) = self.history.front() {
            if now.saturating_duration_since(at) > STABILIZATION {
                self.history.pop_front();
            } else {
                break;
            }
        }
        self.history.push_back((now, raw));
        let stabilized = self.history.iter().map(|&(_, n)| n).max().unwrap_or(raw);
        stabilized.clamp(self.min, self.max)
    }

    fn raw(&self, load: Load) -> u32 {
        if load.work_records == 0 && load.lanes == 0 {
            return 0;
        }
        let need = match self.rate {
            Some(rate) if rate > 0.0 => {
                let per_instance = rate * DRAIN_TARGET.as_secs_f64();
                let need = (load.work_records as f64 / per_instance).ceil();
                if need >= f64::from(u32::MAX) {
                    u32::MAX
                } else {
                    need as u32
                }
            }
            _ => u32::MAX,
        };
        need.min(load.lanes).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Ordering;

    fn scaler(min: u32, max: u32) -> Autoscaler {
        Autoscaler::new(&ScalingSpec {
            min_instances: min,
            max_instances: max,
            idle_timeout: Duration::from_secs(30),
            ordering: Ordering::Partition,
        })
    }

    fn load(work_records: u64, lanes: u32) -> Load {
        Load {
            work_records,
            lanes,
        }
    }

    #[test]
    fn no_work_means_min_instances() {
        let now = Instant::now();
        assert_eq!(scaler(0, 4).desired(now, load(0, 0)), 0);
        assert_eq!(scaler(2, 4).desired(now, load(0, 0)), 2);
    }

    #[test]
    fn before_any_measurement_every_lane_gets_an_instance_up_to_max() {
        let now = Instant::now();
        assert_eq!(scaler(0, 4).desired(now, load(1_000_000, 3)), 3);
        assert_eq!(scaler(0, 4).desired(now, load(1_000_000, 16)), 4);
        // Work at the source but no batch cut yet: one instance gets ready.
        assert_eq!(scaler(0, 4).desired(now, load(10, 0)), 1);
    }

    #[test]
    fn measured_throughput_limits_instances_to_what_the_backlog_needs() {
        let now = Instant::now();
        let mut scaler = scaler(0, 8);
        // 1,000 records per second per instance.
        scaler.observe(100, Duration::from_millis(100));
        assert_eq!(scaler.desired(now, load(500, 8)), 1);
        let mut fresh = self::scaler(0, 8);
        fresh.observe(100, Duration::from_millis(100));
        assert_eq!(fresh.desired(now, load(3_500, 8)), 4);
        let mut fresh = self::scaler(0, 8);
        fresh.observe(100, Duration::from_millis(100));
        assert_eq!(fresh.desired(now, load(1_000_000, 8)), 8);
    }

    #[test]
    fn scales_up_at_once_and_down_only_after_the_stabilization_window() {
        let start = Instant::now();
        let mut scaler = scaler(0, 4);
        assert_eq!(scaler.desired(start, load(0, 0)), 0);
        assert_eq!(
            scaler.desired(start + Duration::from_secs(1), load(1000, 4)),
            4
        );
        // The backlog lasts until `drained`, then the count holds for the window and drops.
        let drained = start + Duration::from_secs(2);
        assert_eq!(scaler.desired(drained, load(10, 4)), 4);
        assert_eq!(
            scaler.desired(drained + Duration::from_millis(1), load(0, 0)),
            4
        );
        assert_eq!(
            scaler.desired(
                drained + STABILIZATION - Duration::from_millis(500),
                load(0, 0)
            ),
            4
        );
        assert_eq!(
            scaler.desired(
                drained + STABILIZATION + Duration::from_millis(1),
                load(0, 0)
            ),
            0
        );
    }

    #[test]
    fn throughput_is_a_moving_average() {
        let mut scaler = scaler(0, 4);
        assert_eq!(scaler.rate(), None);
        scaler.observe(100, Duration::from_secs(1));
        assert_eq!(scaler.rate(), Some(100.0));
        scaler.observe(200, Duration::from_secs(1));
        let rate = scaler.rate().unwrap();
        assert!(rate > 100.0 && rate < 200.0, "{rate}");
        scaler.observe(0, Duration::ZERO);
        assert_eq!(scaler.rate(), Some(rate));
    }
}

//! The loop of a background task that wakes on a period until the node
//! shuts down (the auto-compactor, the lease expiry check).

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Interval, MissedTickBehavior};

pub struct Periodic {
    interval: Interval,
    shutdown: watch::Receiver<bool>,
}

impl Periodic {
    /// Wakes every `period`, the first time at once; a late wake delays
    /// the next rather than bunching them.
    pub fn new(period: Duration, shutdown: watch::Receiver<bool>) -> Periodic {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Periodic { interval, shutdown }
    }

    /// Waits for the next wake; false once `shutdown` turned true (or its
    /// sender is gone).
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => {}
            _ = self.shutdown.changed() => return false,
        }
        !*self.shutdown.borrow()
    }
}

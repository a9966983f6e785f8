//! The error budget of a connection: how many errors a client may cause (refused requests,
//! frames for calls that do not exist, pings) within a window before it loses the
//! connection, so that a flood of cheap bad requests costs bounded work.

use std::time::{Duration, Instant};

/// The period over which `ServerConfig::error_budget` counts.
pub(super) const ERROR_WINDOW: Duration = Duration::from_secs(10);

/// Errors a client caused in the current window.
#[derive(Debug)]
pub(super) struct ErrorBudget {
    allowed: u32,
    window_start: Instant,
    spent: u32,
}

impl ErrorBudget {
    /// A budget of `allowed` errors per [`ERROR_WINDOW`], its first window starting `now`.
    pub(super) fn new(allowed: u32, now: Instant) -> ErrorBudget {
        ErrorBudget {
            allowed,
            window_start: now,
            spent: 0,
        }
    }

    /// Charges one error at `now`; whether the client is now over its budget. A window
    /// that has passed starts afresh.
    pub(super) fn charge(&mut self, now: Instant) -> bool {
        if now.duration_since(self.window_start) >= ERROR_WINDOW {
            self.window_start = now;
            self.spent = 0;
        }
        self.spent = self.spent.saturating_add(1);
        self.spent > self.allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_past_the_budget_is_the_one_that_costs_the_connection() {
        let start = Instant::now();
        let mut budget = ErrorBudget::new(3, start);
        for _ in 0..3 {
            assert!(!budget.charge(start), "within the budget");
        }
        assert!(budget.charge(start), "one error too many");
    }

    #[test]
    fn errors_are_forgiven_once_their_window_has_passed() {
        let start = Instant::now();
        let mut budget = ErrorBudget::new(2, start);
        assert!(!budget.charge(start));
        assert!(!budget.charge(start + Duration::from_secs(5)));
        // A new window: the two errors before it no longer count.
        let later = start + ERROR_WINDOW;
        assert!(!budget.charge(later));
        assert!(!budget.charge(later));
        assert!(budget.charge(later + Duration::from_secs(1)));
    }

    #[test]
    fn a_zero_budget_closes_at_the_first_error() {
        let start = Instant::now();
        assert!(ErrorBudget::new(0, start).charge(start));
    }
}

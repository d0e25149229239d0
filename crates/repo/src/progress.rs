//! How long-running operations report progress, independent of the display
//! (the CLI draws a bar on a terminal and plain lines otherwise).

/// Callbacks from engine threads; implementations must be cheap and `Sync`.
pub trait Progress: Sync {
    /// Totals, when known (files or items, bytes); may be called again as a
    /// background scan refines them.
    fn set_total(&self, _items: u64, _bytes: u64) {}
    /// Work done since the last call.
    fn advance(&self, _items: u64, _bytes: u64) {}
    /// A problem that does not stop the operation (an unreadable file).
    fn warn(&self, _msg: &str) {}
    /// A phase change ("loading index", "writing snapshot").
    fn phase(&self, _name: &str) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

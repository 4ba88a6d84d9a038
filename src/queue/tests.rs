//! The queue's locking side: counts, pressure and the indexes as runs are
//! queued, claimed and finished.

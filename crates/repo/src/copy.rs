//! Copy of snapshots into another repository.

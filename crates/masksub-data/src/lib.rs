//! masksub-data

//! masksub-core

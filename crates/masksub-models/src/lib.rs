//! masksub-models

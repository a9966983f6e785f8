//! Shutdown tests.

//! Printer simulator (being written).

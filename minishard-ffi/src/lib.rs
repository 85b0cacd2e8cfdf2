//! The C ABI of minishard (being written: see issue "The C ABI").

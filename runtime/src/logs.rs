//! CRI log format (`<RFC3339Nano> <stdout|stderr> <P|F> <msg>`): the writer used by the keeper
//! (with rotation by size and count) and the reader used by `bosun logs`.

//! HTTP/1.1 as a client speaks it, on byte slices: requests out, response heads, bodies
//! (length, chunked, until close) and event streams in.

//! Tests: every SIMD path against the scalar spec.

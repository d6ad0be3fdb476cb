//! Criterion benches of the core's decisions.

use criterion::{Criterion, criterion_group, criterion_main};

fn window(c: &mut Criterion) {
    c.bench_function("window_new", |b| {
        b.iter(|| rangecache_core::Window::new(std::hint::black_box(3), 10))
    });
}

criterion_group!(benches, window);
criterion_main!(benches);

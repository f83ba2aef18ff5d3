use candle_core::{Device, Tensor, Var};
use std::time::Instant;
fn main() {
    let dev = Device::Cpu;
    let cases = [
        ((64, 1, 28, 28), (64, 1, 7, 7), 2, 3),
        ((64, 64, 7, 7), (32, 64, 3, 3), 1, 1),
        ((64, 32, 7, 7), (32, 32, 3, 3), 1, 1),
        ((64, 32, 7, 7), (64, 32, 3, 3), 2, 1),
        ((64, 64, 4, 4), (64, 64, 3, 3), 1, 1),
        ((64, 64, 7, 7), (32, 64, 1, 1), 1, 0),
        ((64, 32, 7, 7), (64, 32, 1, 1), 2, 0),
    ];
    for (xs, ws, s, p) in cases {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., xs, &dev).unwrap()).unwrap();
        let w = Var::from_tensor(&Tensor::randn(0f32, 1., ws, &dev).unwrap()).unwrap();
        for _ in 0..2 {
            let t = Instant::now();
            let y = x.as_tensor().conv2d(w.as_tensor(), p, s, 1, 1).unwrap();
            let _ = y.sum_all().unwrap().to_scalar::<f32>().unwrap();
            let tf = t.elapsed();
            let t = Instant::now();
            let g = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            let _ = g
                .get(w.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let tb = t.elapsed();
            println!(
                "{xs:?} {ws:?} s{s} p{p}: fwd {:.2}ms bwd {:.2}ms",
                tf.as_secs_f64() * 1e3,
                tb.as_secs_f64() * 1e3
            );
        }
    }
}

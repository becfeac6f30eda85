//! The restricted pickle interpreter and the torch archive reader on arbitrary bytes. Invariants:
//! no panic, no unbounded allocation (the named limits hold); the first byte selects the input kind
//! (mod 3): 0 = a bare `data.pkl` stream, 1 = a whole `torch.save` ZIP archive, 2 = a legacy
//! (pre-1.6) file. Every accepted tensor lies inside the input.
#![no_main]

use ckpt::checkpoint::pickle::{self, Object};
use ckpt::checkpoint::torch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    if kind % 3 == 0 {
        let mut storages = 0usize;
        if let Ok(p) = pickle::run(rest, &mut |_| {
            storages += 1;
            Ok(())
        }) {
            assert!(p.objects.len() <= pickle::MAX_OBJECTS);
            for o in &p.objects {
                if let Object::Tensor(t) = o {
                    assert!(t.shape.len() <= pickle::MAX_TENSOR_RANK);
                    assert!(matches!(p.objects.get(t.storage), Some(Object::Storage(_))));
                }
            }
        }
        let _ = storages;
    } else {
        let read = if kind % 3 == 1 {
            torch::read_archive(rest, None)
        } else {
            torch::read_legacy(rest, None)
        };
        if let Ok(a) = read {
            for t in &a.tensors {
                assert!(t.begin <= t.end && t.end <= rest.len(), "{t:?} outside the input");
            }
        }
    }
});

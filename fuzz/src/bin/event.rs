//! Fuzz target `event`: arbitrary bytes through `rdg::fuzzing::event` (see
//! that function for the surface and the property checked).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rdg::fuzzing::event(data);
    });
}

//! Fuzz target `http`: arbitrary bytes through `rdg::fuzzing::http` (see
//! that function for the surface and the property checked).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rdg::fuzzing::http(data);
    });
}

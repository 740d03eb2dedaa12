//! Fuzz target `store_codec`: arbitrary bytes through `rdg::fuzzing::store_codec` (see
//! that function for the surface and the property checked).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        rdg::fuzzing::store_codec(data);
    });
}

//! RFC 3074 load balancing as failover uses it (draft §5.3, spec note §14): which of the two
//! servers answers a client in NORMAL.
//!
//! A client's key (its client identifier, else its `chaddr`) is hashed into one of 256 buckets
//! with Pearson's hash; a 32-byte bitmap, the hash-bucket assignment (HBA), says which buckets
//! a server serves. Both servers must hash the same bytes and read the bitmap the same way, so
//! the two points where implementations disagree are decided here, per [`Dialect`]:
//!
//! | | key length | a set HBA bit means |
//! |---|---|---|
//! | [`Dialect::Isc`] | whole client identifier (ISC, Kea) | the **primary** serves the bucket |
//! | [`Dialect::Ringlease`], [`Dialect::Microsoft`] | first 16 bytes (RFC 3074 §4) | the **secondary** serves it (draft §12.11, RFC 3074 §5.2) |
//!
//! `split` (the configuration) always means what it means to ISC: the number of buckets the
//! primary serves, from bucket 0 up. [`hba_for_split`] gives ISC's bitmap for it and
//! [`wire_hba`] the bitmap in a dialect's polarity: what the primary sends in CONNECT and what
//! both sides pass to [`serves_bucket`].

use super::config::{Dialect, Role};

/// Number of hash buckets (one bit each in the 32-byte HBA).
pub const BUCKETS: usize = 256;

/// RFC 3074 §4: "at most the first sixteen bytes of the Client Identifier or chaddr are used".
const RFC_KEY_LIMIT: usize = 16;

/// `split` value for hot standby: the primary serves every bucket. A `u8` cannot say 256 (ISC's
/// value for it), and 255 buckets would leave one bucket to a standby, so 255 means all.
pub const SPLIT_HOT_STANDBY: u8 = 255;

/// The mixing table of RFC 3074 §6 (identical to ISC's `loadb_mx_tbl` and Kea's): a permutation
/// of 0..=255.
const MIX: [u8; 256] = [
    251, 175, 119, 215, 81, 14, 79, 191, 103, 49, 181, 143, 186, 157, 0, 232, 31, 32, 55, 60, 152,
    58, 17, 237, 174, 70, 160, 144, 220, 90, 57, 223, 59, 3, 18, 140, 111, 166, 203, 196, 134, 243,
    124, 95, 222, 179, 197, 65, 180, 48, 36, 15, 107, 46, 233, 130, 165, 30, 123, 161, 209, 23, 97,
    16, 40, 91, 219, 61, 100, 10, 210, 109, 250, 127, 22, 138, 29, 108, 244, 67, 207, 9, 178, 204,
    74, 98, 126, 249, 167, 116, 34, 77, 193, 200, 121, 5, 20, 113, 71, 35, 128, 13, 182, 94, 25,
    226, 227, 199, 75, 27, 41, 245, 230, 224, 43, 225, 177, 26, 155, 150, 212, 142, 218, 115, 241,
    73, 88, 105, 39, 114, 62, 255, 192, 201, 145, 214, 168, 158, 221, 148, 154, 122, 12, 84, 82,
    163, 44, 139, 228, 236, 205, 242, 217, 11, 187, 146, 159, 64, 86, 239, 195, 42, 106, 198, 118,
    112, 184, 172, 87, 2, 173, 117, 176, 229, 247, 253, 137, 185, 99, 164, 102, 147, 45, 66, 231,
    52, 141, 211, 194, 206, 246, 238, 56, 110, 78, 248, 63, 240, 189, 93, 92, 51, 53, 183, 19, 171,
    72, 50, 33, 104, 101, 69, 8, 252, 83, 120, 76, 135, 85, 54, 202, 125, 188, 213, 96, 235, 136,
    208, 162, 129, 190, 132, 156, 38, 47, 1, 7, 254, 24, 4, 216, 131, 89, 21, 28, 133, 37, 153,
    149, 80, 170, 68, 6, 169, 234, 151,
];

/// Pearson's hash as RFC 3074 §6 defines it: seeded with the key's length (mod 256), bytes taken
/// from the last to the first.
pub fn hash(key: &[u8]) -> u8 {
    key.iter()
        .rev()
        .fold(key.len() as u8, |h, &b| MIX[usize::from(h ^ b)])
}

/// The bucket of a client: its client identifier (the whole value of option 61, type byte
/// included) when it sends a non-empty one, else `chaddr[..hlen]` (htype not included).
/// ISC hashes the whole identifier; the others cap the key at 16 bytes as RFC 3074 says, which
/// only matters for identifiers longer than that (RFC 4361 style).
pub fn client_bucket(dialect: Dialect, client_id: Option<&[u8]>, chaddr: &[u8]) -> u8 {
    let key = client_id.filter(|id| !id.is_empty()).unwrap_or(chaddr);
    let key = match dialect {
        Dialect::Isc => key,
        Dialect::Ringlease | Dialect::Microsoft => &key[..key.len().min(RFC_KEY_LIMIT)],
    };
    hash(key)
}

/// ISC's bitmap for `split`: buckets `0..split` set, least-significant bit first in each octet
/// (RFC 3074 §5.2); [`SPLIT_HOT_STANDBY`] sets all 256.
pub fn hba_for_split(split: u8) -> [u8; 32] {
    let set = if split == SPLIT_HOT_STANDBY {
        BUCKETS
    } else {
        usize::from(split)
    };
    let mut hba = [0u8; 32];
    for bucket in 0..set {
        hba[bucket >> 3] |= 1 << (bucket & 7);
    }
    hba
}

/// The bitmap for `split` in `dialect`'s polarity (see the module table): ISC's as is, the
/// draft's its complement, so that `split` buckets go to the primary either way.
pub fn wire_hba(dialect: Dialect, split: u8) -> [u8; 32] {
    let hba = hba_for_split(split);
    if set_bit_is_primary(dialect) {
        hba
    } else {
        hba.map(|octet| !octet)
    }
}

/// Does the server in `role` serve `bucket` under `hba`, read in `dialect`'s polarity?
pub fn serves_bucket(hba: &[u8; 32], role: Role, dialect: Dialect, bucket: u8) -> bool {
    let bit = hba[usize::from(bucket >> 3)] & (1 << (bucket & 7)) != 0;
    let set_is_primary = set_bit_is_primary(dialect);
    match role {
        Role::Primary => bit == set_is_primary,
        Role::Secondary => bit != set_is_primary,
    }
}

/// ISC inverts the draft's polarity (spec note §14, ISC `load_balance_mine`).
fn set_bit_is_primary(dialect: Dialect) -> bool {
    match dialect {
        Dialect::Isc => true,
        Dialect::Ringlease | Dialect::Microsoft => false,
    }
}

#[cfg(test)]
mod tests {
    //! The hash against the spec's vectors (computed there with RFC 3074's own C code), the
    //! table's integrity, and the bitmap layouts and polarities.
    use super::*;

    const MAC: [u8; 6] = [0x00, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e];

    #[test]
    fn hash_matches_the_spec_vectors() {
        // 1: ISC's unit test, hlen 1, chaddr[0] = 14.
        assert_eq!(hash(&[0x0e]), 232);
        // 2: Ethernet chaddr, no option 61.
        assert_eq!(hash(&MAC), 11);
        // 3: the same client with option 61 = 01 + MAC.
        let mut id = vec![0x01];
        id.extend_from_slice(&MAC);
        assert_eq!(hash(&id), 103);
        // 4: all-zero MAC.
        assert_eq!(hash(&[0; 6]), 254);
        // 5 and 5′: a 19-byte RFC 4361 identifier, whole (ISC) and capped at 16 (RFC).
        let long = [
            0xff, 0, 0, 0, 1, 0, 3, 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70, 0xa1, 0xb2,
            0xc3,
        ];
        assert_eq!(hash(&long), 7);
        assert_eq!(hash(&long[..16]), 179);
    }

    #[test]
    fn key_choice_follows_the_dialect() {
        let long = [
            0xff, 0, 0, 0, 1, 0, 3, 0, 1, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f, 0x70, 0xa1, 0xb2,
            0xc3,
        ];
        assert_eq!(client_bucket(Dialect::Isc, Some(&long), &MAC), 7);
        assert_eq!(client_bucket(Dialect::Ringlease, Some(&long), &MAC), 179);
        assert_eq!(client_bucket(Dialect::Microsoft, Some(&long), &MAC), 179);
        for dialect in [Dialect::Isc, Dialect::Ringlease, Dialect::Microsoft] {
            assert_eq!(client_bucket(dialect, None, &MAC), 11);
            assert_eq!(
                client_bucket(dialect, Some(&[]), &MAC),
                11,
                "empty id: chaddr"
            );
            assert_eq!(
                client_bucket(dialect, None, &[]),
                0,
                "no key at all: no panic"
            );
        }
    }

    #[test]
    fn table_is_the_rfc_permutation() {
        let mut seen = [false; 256];
        for &v in &MIX {
            assert!(!seen[usize::from(v)], "{v} twice");
            seen[usize::from(v)] = true;
        }
        // CRC-32 (IEEE, as zlib) of the table, from the spec.
        let mut crc = u32::MAX;
        for &byte in &MIX {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xEDB8_8320 & 0u32.wrapping_sub(crc & 1));
            }
        }
        assert_eq!(!crc, 0x5951_7472);
    }

    #[test]
    fn split_bitmaps_match_isc() {
        let mut half = [0u8; 32];
        half[..16].fill(0xff);
        assert_eq!(hba_for_split(128), half);
        let mut hundred = [0u8; 32];
        hundred[..12].fill(0xff);
        hundred[12] = 0x0f;
        assert_eq!(hba_for_split(100), hundred);
        assert_eq!(hba_for_split(0), [0; 32]);
        assert_eq!(hba_for_split(SPLIT_HOT_STANDBY), [0xff; 32]);
    }

    #[test]
    fn polarity_per_dialect_and_split_always_counts_primary_buckets() {
        let isc_half = hba_for_split(128);
        // Vector 1 (bucket 232) with ISC split 128: the secondary's; vector 2 (11): the primary's.
        assert!(serves_bucket(&isc_half, Role::Secondary, Dialect::Isc, 232));
        assert!(!serves_bucket(&isc_half, Role::Primary, Dialect::Isc, 232));
        assert!(serves_bucket(&isc_half, Role::Primary, Dialect::Isc, 11));
        // ISC's unit test: an all-ones HBA, the primary accepts and the secondary does not.
        assert!(serves_bucket(&[0xff; 32], Role::Primary, Dialect::Isc, 232));
        assert!(!serves_bucket(
            &[0xff; 32],
            Role::Secondary,
            Dialect::Isc,
            232
        ));
        // The draft reads the same bitmap the other way round.
        assert!(serves_bucket(
            &isc_half,
            Role::Secondary,
            Dialect::Ringlease,
            11
        ));
        for dialect in [Dialect::Isc, Dialect::Ringlease, Dialect::Microsoft] {
            for split in [0u8, 1, 100, 128, 200, 254, SPLIT_HOT_STANDBY] {
                let hba = wire_hba(dialect, split);
                let primary = (0..=255u8)
                    .filter(|&b| serves_bucket(&hba, Role::Primary, dialect, b))
                    .count();
                let secondary = (0..=255u8)
                    .filter(|&b| serves_bucket(&hba, Role::Secondary, dialect, b))
                    .count();
                let expected = if split == SPLIT_HOT_STANDBY {
                    BUCKETS
                } else {
                    usize::from(split)
                };
                assert_eq!((primary, secondary), (expected, BUCKETS - expected));
            }
        }
    }
}

//! Checks of what a runner hands back. A runner that breaks its contract
//! (wrong number of logits rows, NaN or infinite logits) must fail the
//! requests it touched, loudly, instead of leaving them hanging with their
//! blocks held or sampling garbage.

use crate::runner::Logits;

/// Checks that `logits` holds exactly `wanted` whole rows.
pub(super) fn check_shape(logits: &Logits, wanted: usize) -> Result<(), String> {
    if wanted > 0 && logits.vocab_size == 0 {
        return Err(format!(
            "the model returned logits with a vocabulary of 0 for {wanted} rows"
        ));
    }
    let expected = wanted.checked_mul(logits.vocab_size);
    if expected != Some(logits.data.len()) {
        return Err(format!(
            "the model returned {} logits ({} rows of {}, remainder {}) where {wanted} rows \
             were asked for",
            logits.data.len(),
            logits.rows(),
            logits.vocab_size,
            logits
                .data
                .len()
                .checked_rem(logits.vocab_size)
                .unwrap_or(0),
        ));
    }
    Ok(())
}

/// Describes the first NaN or infinite logit of `row`, if any. Raw model
/// logits are always finite: masking to minus infinity happens later, in the
/// sampler.
pub(super) fn check_finite(row: &[f32]) -> Result<(), String> {
    match row.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(format!(
            "the model returned a non-finite logit ({}) for token {i}",
            row[i]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn logits(vocab_size: usize, len: usize) -> Logits {
        Logits {
            vocab_size,
            data: vec![0.5; len],
        }
    }

    #[test]
    fn shape_must_be_whole_rows_as_many_as_asked() {
        assert!(check_shape(&logits(4, 8), 2).is_ok());
        assert!(check_shape(&logits(4, 0), 0).is_ok());
        assert!(check_shape(&logits(0, 0), 0).is_ok());
        let few = check_shape(&logits(4, 4), 2).expect_err("too few rows");
        assert!(
            few.contains("1 rows of 4") && few.contains("2 rows"),
            "{few}"
        );
        assert!(check_shape(&logits(4, 12), 2).is_err(), "too many rows");
        assert!(check_shape(&logits(4, 9), 2).is_err(), "a partial row");
        assert!(check_shape(&logits(0, 0), 1).is_err(), "no vocabulary");
        assert!(check_shape(&logits(usize::MAX, 0), 2).is_err(), "overflow");
    }

    #[test]
    fn nan_and_infinities_are_caught() {
        assert!(check_finite(&[0.0, -1e30, 1e30]).is_ok());
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let e = check_finite(&[0.0, 1.0, bad]).expect_err("non-finite");
            assert!(e.contains("token 2"), "{e}");
        }
    }
}

//! The settlement decision: what one answer to a batch does to it. Only an
//! accepted answer settles anything. "Too many assets" splits the batch; a
//! refusal that names assets of the batch sets exactly those aside (the
//! rest goes out again); every other failure keeps the whole batch owed.
//! Anonymous refusals are not bisected: one answer cannot tell a bad asset
//! from a bad request (a proxy's 400, a WAF page, a body-size limit), and
//! bisecting would set innocent assets aside.

use crate::api::ApiError;
use crate::state::Pending;

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// Accepted: remove from the outbox.
    Settle(Vec<Pending>),
    /// The server takes fewer assets per request: send the halves.
    Split(Vec<Pending>, Vec<Pending>),
    /// Optimole named `refused`: set them aside; send `rest` again.
    Refuse {
        refused: Vec<Pending>,
        rest: Vec<Pending>,
    },
    /// Not accepted: the batch, and everything after it, stays owed.
    Keep(Vec<Pending>),
}

pub(super) fn decide(mut batch: Vec<Pending>, result: &Result<(), ApiError>) -> Decision {
    match result {
        Ok(()) => Decision::Settle(batch),
        Err(ApiError::TooManyAssets { .. }) if batch.len() > 1 => {
            let second = batch.split_off(batch.len() / 2);
            Decision::Split(batch, second)
        }
        Err(ApiError::Refused { assets, .. }) => {
            let (refused, rest): (Vec<Pending>, Vec<Pending>) =
                batch.into_iter().partition(|p| assets.contains(&p.asset));
            if refused.is_empty() {
                // Names nothing we sent: not a refusal of ours.
                Decision::Keep(rest)
            } else {
                Decision::Refuse { refused, rest }
            }
        }
        Err(_) => Decision::Keep(batch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state::testing::pending as batch;

    fn not_accepted(status: u16) -> Result<(), ApiError> {
        Err(ApiError::NotAccepted {
            status,
            message: "no".into(),
            retry_after: None,
        })
    }

    #[test]
    fn only_acceptance_settles() {
        let b = batch(&["a", "b"]);
        assert_eq!(decide(b.clone(), &Ok(())), Decision::Settle(b.clone()));
        let failures = [
            not_accepted(400),
            not_accepted(413),
            not_accepted(200),
            not_accepted(301),
            Err(ApiError::Misconfigured {
                status: 404,
                message: "x".into(),
            }),
            Err(ApiError::Transient {
                message: "x".into(),
                retry_after: None,
            }),
            Err(ApiError::Unauthorized {
                status: 401,
                message: "x".into(),
            }),
        ];
        for failure in &failures {
            assert_eq!(decide(b.clone(), failure), Decision::Keep(b.clone()));
        }
    }

    #[test]
    fn too_many_splits_and_a_single_asset_stays_owed() {
        let too_many = Err(ApiError::TooManyAssets {
            status: 400,
            message: "Too many assets to invalidate".into(),
        });
        assert_eq!(
            decide(batch(&["a", "b", "c"]), &too_many),
            Decision::Split(batch(&["a"]), batch(&["b", "c"]))
        );
        assert_eq!(
            decide(batch(&["a"]), &too_many),
            Decision::Keep(batch(&["a"]))
        );
    }

    #[test]
    fn a_refusal_sets_aside_exactly_the_named_assets() {
        let refused = |names: &[&str]| {
            Err(ApiError::Refused {
                status: 422,
                message: "Invalid asset".into(),
                assets: names.iter().map(|n| n.to_string()).collect(),
            })
        };
        assert_eq!(
            decide(batch(&["a", "b", "c"]), &refused(&["b"])),
            Decision::Refuse {
                refused: batch(&["b"]),
                rest: batch(&["a", "c"]),
            }
        );
        assert_eq!(
            decide(batch(&["a", "b"]), &refused(&["z"])),
            Decision::Keep(batch(&["a", "b"]))
        );
    }
}

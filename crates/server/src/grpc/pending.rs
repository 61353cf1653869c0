//! The service whose issue is still open: every RPC answers `UNIMPLEMENTED` with an
//! `ErrorInfo` (reason `NOT_IMPLEMENTED`), so the whole contract is visible and callable.

use marketing_proto::v1::{self as pb, points_account_service_server::PointsAccountService};
use tonic::{Request, Response, Status};

use crate::error::not_implemented;

/// `PointsAccountService`, until the points issue lands.
pub struct PendingPoints;

/// Implements `$service` for `$ty` with every RPC answering `UNIMPLEMENTED`. (The macro
/// emits the whole impl: `async_trait` cannot see methods a macro adds inside one.)
macro_rules! unimplemented_service {
    ($service:ident for $ty:ty { $($method:ident: $rpc:literal, $request:ident -> $response:ident;)* }) => {
        #[tonic::async_trait]
        impl $service for $ty {
            $(
                async fn $method(&self, _request: Request<pb::$request>) -> Result<Response<pb::$response>, Status> {
                    Err(not_implemented($rpc))
                }
            )*
        }
    };
}

unimplemented_service! {
    PointsAccountService for PendingPoints {
        get_points_account: "GetPointsAccount", GetPointsAccountRequest -> GetPointsAccountResponse;
        earn_points: "EarnPoints", EarnPointsRequest -> EarnPointsResponse;
        deduct_points: "DeductPoints", DeductPointsRequest -> DeductPointsResponse;
        freeze_points: "FreezePoints", FreezePointsRequest -> FreezePointsResponse;
        confirm_frozen_points: "ConfirmFrozenPoints", ConfirmFrozenPointsRequest -> ConfirmFrozenPointsResponse;
        release_frozen_points: "ReleaseFrozenPoints", ReleaseFrozenPointsRequest -> ReleaseFrozenPointsResponse;
        refund_points: "RefundPoints", RefundPointsRequest -> RefundPointsResponse;
        list_points_transactions: "ListPointsTransactions", ListPointsTransactionsRequest -> ListPointsTransactionsResponse;
        get_points_leaderboard: "GetPointsLeaderboard", GetPointsLeaderboardRequest -> GetPointsLeaderboardResponse;
        create_points_rule: "CreatePointsRule", CreatePointsRuleRequest -> CreatePointsRuleResponse;
        update_points_rule: "UpdatePointsRule", UpdatePointsRuleRequest -> UpdatePointsRuleResponse;
        list_points_rules: "ListPointsRules", ListPointsRulesRequest -> ListPointsRulesResponse;
    }
}

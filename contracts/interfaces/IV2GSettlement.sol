// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";

/// @title IV2GSettlement
/// @notice Escrowed, auditable settlement of metered V2G energy trades between an
///         aggregator and EV owners.
/// @dev Money is an ERC-20's base units. Each settlement period is proposed as a
///      Merkle root over entries `(chainId, contract, periodId, entryId, owner, amount)`
///      (OpenZeppelin standard leaf: double keccak of the ABI encoding), where a
///      positive `amount` credits the owner (the aggregator pays, e.g. V2G energy)
///      and a negative one debits the owner (the owner pays, e.g. charging).
///      The metering party's key signs the period root with EIP-712 (the period id is the
///      signature's nonce: one signature per period, spent by the proposal). The proposal reserves
///      the period's credits from the aggregator's balance; an auditor may dispute during the
///      challenge window (the reserve returns to the aggregator); after it, the period is finalised
///      and entries are claimed with proofs until the claim deadline, when the unclaimed reserve
///      can be released back to the aggregator.
///      Debits are secured by a withdrawal notice: an owner's balance leaves escrow only
///      `noticePeriod` after the owner asked for it (counted from the last dispute, meter rotation or
///      pause if later), and until then it still pays debits; what a balance cannot pay is debt, repaid
///      first from the owner's next credit or deposit. Credits are paid from the period's reserve, then
///      from the aggregator's free balance, and what neither covers is owed by the aggregator (which
///      cannot withdraw while it owes). `docs/security.md` states the property and its argument.
///      Every balance change is an event, so replaying events rebuilds the ledger
///      (`docs/security.md` lists the rules and the replay of each event).
interface IV2GSettlement {
    /// @notice Lifecycle of a settlement period.
    enum PeriodState {
        None,
        Proposed,
        Disputed,
        Finalised
    }

    /// @notice What a proposal commits to; passed back with every later call on the period.
    /// @param root Merkle root of the period's entries.
    /// @param totalCredit Sum of positive entry amounts (owed to owners).
    /// @param totalDebit Sum of the magnitudes of negative entry amounts (owed by owners).
    /// @param entryCount Number of entries; entry ids are `0 .. entryCount - 1`.
    /// @param challengeEnds Unix time after which the period can be finalised.
    struct PeriodHeader {
        bytes32 root;
        uint96 totalCredit;
        uint96 totalDebit;
        uint32 entryCount;
        uint64 challengeEnds;
    }

    /// @notice The first holders of the settler, auditor and pauser roles (zero address: none).
    struct InitialRoles {
        address settler;
        address auditor;
        address pauser;
    }

    // --- errors -------------------------------------------------------------

    /// @notice An address argument was the zero address.
    error ZeroAddress();
    /// @notice An amount argument was zero.
    error ZeroAmount();
    /// @notice The token moved a different amount than asked (fee-on-transfer tokens are refused).
    error TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice `account` holds `available` and asked to withdraw `requested`.
    error InsufficientBalance(address account, uint256 available, uint256 requested);
    /// @notice `account` asked to withdraw `requested` but its notice covers only `pending`.
    error WithdrawalNotRequested(address account, uint256 requested, uint256 pending);
    /// @notice `account`'s withdrawal notice runs until `availableAt`.
    error WithdrawalNotDue(address account, uint64 availableAt);
    /// @notice `account`'s notice could be used until `expiredAt` only: give notice again.
    error WithdrawalNoticeExpired(address account, uint64 expiredAt);
    /// @notice The aggregator owes owners `total` in credits its balance could not fund: it cannot withdraw.
    error CreditsOwed(uint256 total);
    /// @notice The aggregator owes `account` nothing.
    error NothingOwed(address account);
    /// @notice The aggregator's free balance (`available`) cannot pay any of the `required` owed credit.
    error AggregatorUnderfunded(uint256 required, uint256 available);
    /// @notice Deposits, proposals and withdrawals wait while paused (until the pause is lifted or lapses).
    error EnforcedPause();
    /// @notice Not paused.
    error ExpectedPause();
    /// @notice A new pause can start only from `availableAt` (a notice after the last pause ended, plus a day).
    error PauseGapNotOver(uint64 availableAt);
    /// @notice The meter key may hold no role and be neither the admin nor a settler, auditor or pauser.
    error MeterCannotHoldRole(address account);
    /// @notice `account` cannot hold `role`: the auditor is never the aggregator, a settler or the admin.
    error RoleConflict(bytes32 role, address account);
    /// @notice Grant `role` to `account` only after {scheduleRoleGrant}.
    error RoleGrantNotScheduled(bytes32 role, address account);
    /// @notice The scheduled grant of `role` to `account` takes effect at `effectiveAt`.
    error RoleGrantNotDue(bytes32 role, address account, uint64 effectiveAt);
    /// @notice Constructor: the challenge window must be within `[min, max]` seconds.
    error LivenessOutOfRange(uint64 liveness, uint64 min, uint64 max);
    /// @notice Constructor: the withdrawal notice must be within `[min, max]` seconds
    ///         (`min` = liveness + PROPOSAL_GRACE + MIN_COLLECTION_TIME).
    error NoticePeriodOutOfRange(uint64 noticePeriod, uint64 min, uint64 max);
    /// @notice Constructor: the claim window must be within `[min, max]` seconds.
    error ClaimWindowOutOfRange(uint64 claimWindow, uint64 min, uint64 max);
    /// @notice A period with this id was already proposed.
    error PeriodAlreadyExists(uint64 periodId);
    /// @notice A proposal with no entries or no value.
    error EmptyPeriod(uint64 periodId);
    /// @notice The header passed does not match what was proposed for `periodId`.
    error PeriodHeaderMismatch(uint64 periodId);
    /// @notice The period is not in the state the call needs.
    error PeriodNotInState(uint64 periodId, PeriodState expected, PeriodState actual);
    /// @notice The challenge window of `periodId` is still open until `challengeEnds`.
    error ChallengeWindowOpen(uint64 periodId, uint64 challengeEnds);
    /// @notice The challenge window of `periodId` closed at `challengeEnds`.
    error ChallengeWindowClosed(uint64 periodId, uint64 challengeEnds);
    /// @notice The claim window of `periodId` runs until `claimDeadline`: its reserve cannot be released yet.
    error ClaimWindowOpen(uint64 periodId, uint64 claimDeadline);
    /// @notice The period holds no reserve to release.
    error NothingToRelease(uint64 periodId);
    /// @notice The aggregator's free balance cannot cover the period's credits (or a claim beyond them).
    error UnderfundedPeriod(uint64 periodId, uint256 required, uint256 available);
    /// @notice The proposal's signature recovers to `signer`, which is not the meter key.
    error InvalidMeterSignature(address signer);
    /// @notice The meter key changed at `meterSince`, not before the period was proposed at `proposedAt`:
    ///         the key that signed the period is no longer trusted, so it cannot be finalised.
    error MeterRotatedSinceProposal(uint64 periodId, uint64 proposedAt, uint64 meterSince);
    /// @notice The aggregator's key proposes periods, so it may not also be the meter key that signs them.
    error MeterCannotPropose(address account);
    /// @notice Only the aggregator's account proposes periods (a proposal reserves its float).
    error NotAggregator(address caller);
    /// @notice No meter change is scheduled.
    error NoMeterChangePending();
    /// @notice The scheduled meter key `pendingMeter` can be accepted from `effectiveAt` on.
    error MeterChangeNotDue(address pendingMeter, uint64 effectiveAt);
    /// @notice The entry was already claimed.
    error AlreadyClaimed(uint64 periodId, uint256 entryId);
    /// @notice The entry id is not below the period's entry count.
    error EntryOutOfRange(uint64 periodId, uint256 entryId, uint32 entryCount);
    /// @notice The Merkle proof does not prove this entry under the period's root.
    error InvalidProof(uint64 periodId, uint256 entryId);
    /// @notice An entry amount is zero or its magnitude exceeds 2^96 - 1.
    error AmountOutOfRange(int256 amount);
    /// @notice Collecting this debit would exceed the period's signed debit total (owners are never
    ///         debited beyond what the meter signed).
    error ClaimExceedsPeriodTotal(uint64 periodId, uint256 entryId);
    /// @notice Only the entry's owner or a settler may claim it.
    error NotOwnerOrSettler(address caller, address owner);
    /// @notice Parallel arrays of different lengths.
    error ArrayLengthMismatch();
    /// @notice A batch longer than `max` entries.
    error BatchTooLarge(uint256 length, uint256 max);

    // --- events -------------------------------------------------------------

    /// @notice `amount` entered `account`'s ledger balance, paid by `from` (after any debt repaid).
    event Deposited(address indexed account, address indexed from, uint256 amount, uint256 debtRepaid);
    /// @notice `account` gave notice to withdraw up to `amount` from `availableAt` on (replacing any
    ///         earlier notice). The balance stays in escrow, and pays debits, until it is withdrawn.
    event WithdrawalRequested(address indexed account, uint256 amount, uint64 availableAt);
    /// @notice `amount` left `account`'s ledger balance to `to`.
    event Withdrawn(address indexed account, address indexed to, uint256 amount);
    /// @notice A period root was proposed, signed by the meter key in force (see {MeterChanged});
    ///         `totalCredit` moved from the aggregator's balance into the period's reserve. (`root` is not
    ///         indexed: a topic costs more gas than a data word, and periods are looked up by id.)
    event PeriodProposed(
        uint64 indexed periodId,
        bytes32 root,
        uint96 totalCredit,
        uint96 totalDebit,
        uint32 entryCount,
        uint64 challengeEnds
    );
    /// @notice The admin scheduled the meter key `pending` to replace `current` from `effectiveAt` on.
    event MeterChangeScheduled(address indexed current, address indexed pending, uint64 effectiveAt);
    /// @notice The admin withdrew the scheduled meter key `pending`.
    event MeterChangeCancelled(address indexed pending);
    /// @notice The key whose signature makes a period root metered changed from `previous` to `meter`.
    ///         Periods proposed before this event can no longer be finalised.
    event MeterChanged(address indexed previous, address indexed meter);
    /// @notice A period was disputed within its challenge window (or voided because its meter key was
    ///         rotated away, `auditor` then being the caller of {release}); the period id is spent.
    event PeriodDisputed(uint64 indexed periodId, address indexed auditor, bytes32 reason);
    /// @notice A period was finalised: its entries can be claimed.
    event PeriodFinalised(uint64 indexed periodId, uint96 totalCredit, uint96 totalDebit);
    /// @notice `amount` of the period's reserve returned to the aggregator's balance (dispute, every
    ///         entry claimed, claim deadline passed, or meter key rotated away).
    event ReserveReleased(uint64 indexed periodId, uint256 amount);
    /// @notice An entry was paid. `paid` moved between owner and aggregator; `debtAdded` could not be
    ///         collected from the owner's balance and became debt.
    event EntryClaimed(
        uint64 indexed periodId,
        uint256 indexed entryId,
        address indexed owner,
        int256 amount,
        uint256 paid,
        uint256 debtAdded
    );
    /// @notice Of a credit just claimed, `amount` came from the aggregator's free balance rather than the
    ///         period's reserve (the reserve was released, or the signed total was below the tree's credits).
    event CreditShortfallPaid(uint64 indexed periodId, uint256 indexed entryId, uint256 amount);
    /// @notice A batch skipped an entry that was already claimed (e.g. by its owner).
    event EntrySkipped(uint64 indexed periodId, uint256 indexed entryId);
    /// @notice Of a credit just claimed, `amount` repaid `owner`'s debt (it went to the aggregator).
    event DebtRepaid(address indexed owner, uint256 amount);
    /// @notice Of a credit just claimed, `amount` could be funded neither by the period's reserve nor by the
    ///         aggregator's free balance: the aggregator owes it to `owner` ({payOwed}).
    event CreditOwed(uint64 indexed periodId, uint256 indexed entryId, address indexed owner, uint256 amount);
    /// @notice `amount` of `account`'s debt and of the credit the aggregator owes it cancelled each other.
    event DebtOffset(address indexed account, uint256 amount);
    /// @notice `amount` the aggregator owed `account` moved from the aggregator's free balance to it.
    event OwedCreditPaid(address indexed account, uint256 amount);
    /// @notice `account` paused deposits, proposals and withdrawals until `until` at the latest.
    event Paused(address account, uint64 until);
    /// @notice `account` lifted the pause.
    event Unpaused(address account);
    /// @notice The admin scheduled the grant of `role` to `account`, possible from `effectiveAt` on.
    event RoleGrantScheduled(bytes32 indexed role, address indexed account, uint64 effectiveAt);
    /// @notice The admin withdrew the scheduled grant of `role` to `account`.
    event RoleGrantCancelled(bytes32 indexed role, address indexed account);

    // --- escrow -------------------------------------------------------------

    /// @notice Deposit `amount` of the settlement token to the caller's ledger balance.
    function deposit(uint256 amount) external;

    /// @notice Deposit `amount` to `account`'s ledger balance, paid by the caller.
    function depositFor(address account, uint256 amount) external;

    /// @notice Deposit to several accounts in one transfer paid by the caller (at most `MAX_BATCH`),
    ///         e.g. a fleet manager funding its drivers' escrow.
    function depositForMany(address[] calldata accounts, uint256[] calldata amounts) external;

    /// @notice Give notice to withdraw up to `amount` (at most the caller's balance) after
    ///         {noticePeriod}; replaces any earlier notice. Never blocked by a pause. A later dispute, meter
    ///         rotation or pause makes the notice run from then; once run out, it can be used for
    ///         `WITHDRAWAL_WINDOW`, then it expires.
    /// @return availableAt Unix time from which {withdraw} pays (as things stand now).
    function requestWithdrawal(uint256 amount) external returns (uint64 availableAt);

    /// @notice Withdraw `amount` of the caller's ledger balance, within a notice that has run out and not
    ///         expired (not while paused; the aggregator not while it owes credits).
    function withdraw(uint256 amount) external;

    /// @notice Pay what the aggregator owes `account` ({CreditOwed}) from its free balance, as far as it
    ///         goes (anyone).
    /// @return paid The amount moved to `account`'s balance.
    function payOwed(address account) external returns (uint256 paid);

    // --- periods ------------------------------------------------------------

    /// @notice Propose a period (the aggregator's account only) and reserve its credits from the
    ///         aggregator's balance.
    ///         `(signatureR, signatureVS)` is the meter's EIP-712 signature of
    ///         `PeriodRoot(periodId, root, totalCredit, totalDebit, entryCount)` in EIP-2098's compact
    ///         form (64 bytes: cheaper calldata than 65 with an offset and a length); the period id is its
    ///         nonce (each period id is proposed once, so no signature is accepted twice).
    /// @return challengeEnds Unix time after which the period can be finalised.
    function propose(
        uint64 periodId,
        bytes32 root,
        uint96 totalCredit,
        uint96 totalDebit,
        uint32 entryCount,
        bytes32 signatureR,
        bytes32 signatureVS
    ) external returns (uint64 challengeEnds);

    /// @notice Dispute a proposed period during its challenge window (auditor role); its reserve returns
    ///         to the aggregator.
    function dispute(uint64 periodId, PeriodHeader calldata header, bytes32 reason) external;

    /// @notice Finalise a proposed period after its challenge window (anyone), if the meter key that
    ///         signed it is still the meter key.
    function finalise(uint64 periodId, PeriodHeader calldata header) external;

    /// @notice Return a period's unclaimed reserve to the aggregator (anyone): a finalised period after
    ///         its claim deadline (`challengeEnds + claimWindow`), or a proposed period whose meter key was
    ///         rotated away (the period is then voided as disputed). Entries stay claimable after a
    ///         release, paid from the aggregator's free balance.
    function release(uint64 periodId, PeriodHeader calldata header) external;

    /// @notice Claim one entry of a finalised period with its Merkle proof (its owner or a settler).
    function claim(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256 entryId,
        address owner,
        int256 amount,
        bytes32[] calldata proof
    ) external;

    /// @notice Claim up to `MAX_BATCH` entries on the owners' behalf (settler role). Entries already
    ///         claimed are skipped with {EntrySkipped}; any other bad entry reverts the batch.
    function claimBatch(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256[] calldata entryIds,
        address[] calldata owners,
        int256[] calldata amounts,
        bytes32[][] calldata proofs
    ) external;

    // --- meter --------------------------------------------------------------

    /// @notice The key that signs period roots of metered energy.
    function meter() external view returns (address);

    /// @notice When the current meter key took effect (0: since deployment).
    function meterSince() external view returns (uint64);

    /// @notice The scheduled meter key and when it can be accepted (zero when none).
    function pendingMeter() external view returns (address pending, uint64 effectiveAt);

    /// @notice Schedule `newMeter` to replace the meter key after {noticePeriod} (admin role), so that
    ///         owners can leave before a key they do not trust signs; replaces any scheduled change.
    function setMeter(address newMeter) external;

    /// @notice Withdraw the scheduled meter change (admin role).
    function cancelMeterChange() external;

    /// @notice Make the scheduled meter key the meter key once due (admin role). Periods proposed
    ///         under the previous key can no longer be finalised (see {release}); notices run from now.
    function acceptMeter() external;
    // --- roles and pause ----------------------------------------------------
    /// @notice Schedule the grant of `role` to `account` (the role's admin), possible with `grantRole`
    ///         {noticePeriod} later; the admin role itself moves with OpenZeppelin's two-step transfer.
    /// @return effectiveAt Unix time from which the grant can be made.
    function scheduleRoleGrant(bytes32 role, address account) external returns (uint64 effectiveAt);
    /// @notice Withdraw a scheduled grant.
    function cancelRoleGrant(bytes32 role, address account) external;
    /// @notice When the scheduled grant of `role` to `account` can be made (0: none scheduled).
    function roleGrantAt(bytes32 role, address account) external view returns (uint64);
    /// @notice Pause deposits, proposals and withdrawals (pauser role) for at most `MAX_PAUSE`; a new pause
    ///         only a notice and a day after the last one ended. Disputes, finalisation, claims and releases
    ///         go on, and notices run from the pause's end.
    function pause() external;
    /// @notice Lift the pause (pauser role).
    function unpause() external;
    /// @notice Whether deposits, proposals and withdrawals are paused now.
    function paused() external view returns (bool);
    /// @notice When the current or last pause ends or ended (0: never paused).
    function pausedUntil() external view returns (uint64);
    /// @notice The last time a proposed period was voided by a dispute or a meter rotation.
    function lastVoidAt() external view returns (uint64);

    // --- views --------------------------------------------------------------

    /// @notice The settlement token.
    function token() external view returns (IERC20);

    /// @notice The aggregator's ledger account: it pays credits and receives debits.
    function aggregator() external view returns (address);

    /// @notice Seconds between proposal and the earliest finalisation.
    function liveness() external view returns (uint64);

    /// @notice Seconds between a withdrawal request and the earliest withdrawal; also the delay of
    ///         meter and admin changes.
    function noticePeriod() external view returns (uint64);

    /// @notice Seconds after the challenge window during which a period's credits stay reserved.
    function claimWindow() external view returns (uint64);

    /// @notice Ledger balance of `account` in token base units (including any amount under notice).
    function balanceOf(address account) external view returns (uint256);

    /// @notice Debits of `account` not yet collected; repaid first from its next credit or deposit.
    function debtOf(address account) external view returns (uint256);

    /// @notice Credits the aggregator owes `account` and could not fund yet ({payOwed}).
    function owedTo(address account) external view returns (uint256);

    /// @notice Credits the aggregator owes all accounts together.
    function owedTotal() external view returns (uint256);

    /// @notice The withdrawal notice of `account`: up to `amount` from `availableAt` until `expiresAt`
    ///         (as things stand now: a dispute, meter rotation or pause moves both later).
    function withdrawalOf(address account)
        external
        view
        returns (uint256 amount, uint64 availableAt, uint64 expiresAt);

    /// @notice Ledger balances and debts of many accounts in one call (for auditors' reconciliation).
    function balancesOf(address[] calldata accounts)
        external
        view
        returns (uint256[] memory balances, uint256[] memory debts);

    /// @notice The state of `periodId`.
    function periodState(uint64 periodId) external view returns (PeriodState);

    /// @notice The credit still reserved and the debit not yet collected of `periodId` (finalised periods).
    function remaining(uint64 periodId) external view returns (uint96 credit, uint96 debit);

    /// @notice How many entries of `periodId` were claimed.
    function claimedCount(uint64 periodId) external view returns (uint32);

    /// @notice Whether entry `entryId` of `periodId` was claimed.
    function isClaimed(uint64 periodId, uint256 entryId) external view returns (bool);

    /// @notice The Merkle leaf of an entry (OpenZeppelin standard leaf).
    function leaf(uint64 periodId, uint256 entryId, address owner, int256 amount) external view returns (bytes32);

    /// @notice The rounding rule: value of `wh` watt-hours at `pricePerKwh` base units per kWh,
    ///         wh × price / 1000 rounded to the nearest unit, halves away from zero.
    function energyValue(uint256 wh, int256 pricePerKwh) external pure returns (int256);

    /// @notice `feeBps` basis points of `amount`, rounded half up.
    function feeOf(uint256 amount, uint256 feeBps) external pure returns (uint256);

    /// @notice The EIP-712 digest the meter signs for a proposal.
    function periodRootDigest(
        uint64 periodId,
        bytes32 root,
        uint96 totalCredit,
        uint96 totalDebit,
        uint32 entryCount
    ) external view returns (bytes32);
}

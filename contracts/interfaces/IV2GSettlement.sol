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
///      signature's nonce: one signature per period, spent by the proposal); an auditor may dispute
///      during the challenge window; after it, finalisation reserves the period's
///      credits from the aggregator's balance, and entries are claimed with proofs.
///      Every balance change is an event, so replaying events rebuilds the ledger.
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

    // --- errors -------------------------------------------------------------

    /// @notice An address argument was the zero address.
    error ZeroAddress();
    /// @notice An amount argument was zero.
    error ZeroAmount();
    /// @notice The token moved a different amount than asked (fee-on-transfer tokens are refused).
    error TransferAmountMismatch(uint256 expected, uint256 received);
    /// @notice `account` holds `available` and asked to withdraw `requested`.
    error InsufficientBalance(address account, uint256 available, uint256 requested);
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
    /// @notice The aggregator's free balance cannot cover the period's credits.
    error UnderfundedPeriod(uint64 periodId, uint256 required, uint256 available);
    /// @notice The proposal's signature recovers to `signer`, which is not the meter key.
    error InvalidMeterSignature(address signer);
    /// @notice The entry was already claimed.
    error AlreadyClaimed(uint64 periodId, uint256 entryId);
    /// @notice The entry id is not below the period's entry count.
    error EntryOutOfRange(uint64 periodId, uint256 entryId, uint32 entryCount);
    /// @notice The Merkle proof does not prove this entry under the period's root.
    error InvalidProof(uint64 periodId, uint256 entryId);
    /// @notice An entry amount is zero or its magnitude exceeds 2^96 - 1.
    error AmountOutOfRange(int256 amount);
    /// @notice Paying this entry would exceed the period's committed credit or debit total.
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
    /// @notice `amount` left `account`'s ledger balance to `to`.
    event Withdrawn(address indexed account, address indexed to, uint256 amount);
    /// @notice A period root was proposed, signed by the meter key in force (see {MeterChanged}).
    event PeriodProposed(
        uint64 indexed periodId,
        bytes32 indexed root,
        uint96 totalCredit,
        uint96 totalDebit,
        uint32 entryCount,
        uint64 challengeEnds
    );
    /// @notice The key whose signature makes a period root metered changed from `previous` to `meter`.
    event MeterChanged(address indexed previous, address indexed meter);
    /// @notice An auditor disputed a period within its challenge window; the period id is spent.
    event PeriodDisputed(uint64 indexed periodId, address indexed auditor, bytes32 reason);
    /// @notice A period was finalised: `totalCredit` moved from the aggregator's balance into its reserve.
    event PeriodFinalised(uint64 indexed periodId, uint96 totalCredit, uint96 totalDebit);
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

    // --- escrow -------------------------------------------------------------

    /// @notice Deposit `amount` of the settlement token to the caller's ledger balance.
    function deposit(uint256 amount) external;

    /// @notice Deposit `amount` to `account`'s ledger balance, paid by the caller.
    function depositFor(address account, uint256 amount) external;

    /// @notice Deposit to several accounts in one transfer paid by the caller (at most `MAX_BATCH`),
    ///         e.g. a fleet manager funding its drivers' escrow.
    function depositForMany(address[] calldata accounts, uint256[] calldata amounts) external;

    /// @notice Withdraw `amount` of the caller's ledger balance. Never blocked by a pause.
    function withdraw(uint256 amount) external;

    // --- periods ------------------------------------------------------------

    /// @notice Propose a period (settler role). `meterSignature` is the meter's EIP-712 signature of
    ///         `PeriodRoot(periodId, root, totalCredit, totalDebit, entryCount)`; the period id is its
    ///         nonce (each period id is proposed once, so no signature is accepted twice).
    /// @return challengeEnds Unix time after which the period can be finalised.
    function propose(
        uint64 periodId,
        bytes32 root,
        uint96 totalCredit,
        uint96 totalDebit,
        uint32 entryCount,
        bytes calldata meterSignature
    ) external returns (uint64 challengeEnds);

    /// @notice Dispute a proposed period during its challenge window (auditor role).
    function dispute(uint64 periodId, PeriodHeader calldata header, bytes32 reason) external;

    /// @notice Finalise a proposed period after its challenge window, reserving its credits.
    function finalise(uint64 periodId, PeriodHeader calldata header) external;

    /// @notice Claim one entry of a finalised period with its Merkle proof (its owner or a settler).
    function claim(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256 entryId,
        address owner,
        int256 amount,
        bytes32[] calldata proof
    ) external;

    /// @notice Claim up to `MAX_BATCH` entries on the owners' behalf (settler role).
    function claimBatch(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256[] calldata entryIds,
        address[] calldata owners,
        int256[] calldata amounts,
        bytes32[][] calldata proofs
    ) external;

    // --- views --------------------------------------------------------------

    /// @notice The settlement token.
    function token() external view returns (IERC20);

    /// @notice The aggregator's ledger account: it pays credits and receives debits.
    function aggregator() external view returns (address);

    /// @notice Seconds between proposal and the earliest finalisation.
    function liveness() external view returns (uint64);

    /// @notice Ledger balance of `account` in token base units.
    function balanceOf(address account) external view returns (uint256);

    /// @notice Debits of `account` not yet collected; repaid first from its next deposit.
    function debtOf(address account) external view returns (uint256);

    /// @notice Ledger balances and debts of many accounts in one call (for auditors' reconciliation).
    function balancesOf(address[] calldata accounts)
        external
        view
        returns (uint256[] memory balances, uint256[] memory debts);

    /// @notice The state of `periodId`.
    function periodState(uint64 periodId) external view returns (PeriodState);

    /// @notice The credit and debit of `periodId` not yet claimed (finalised periods).
    function remaining(uint64 periodId) external view returns (uint96 credit, uint96 debit);

    /// @notice Whether entry `entryId` of `periodId` was claimed.
    function isClaimed(uint64 periodId, uint256 entryId) external view returns (bool);

    /// @notice The key that signs period roots of metered energy.
    function meter() external view returns (address);

    /// @notice Replace the meter key (admin role), e.g. after a rotation or a compromise; roots signed
    ///         by the previous key are refused from now on.
    function setMeter(address newMeter) external;

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

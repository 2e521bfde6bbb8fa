// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {AccessControlDefaultAdminRules} from
    "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {IV2GSettlement} from "./interfaces/IV2GSettlement.sol";
import {SettlementMath} from "./SettlementMath.sol";

/// @title V2GSettlement
/// @notice Escrow and per-period settlement of metered V2G trades. See {IV2GSettlement} and
///         `docs/security.md` (actors, rules, what an auditor watches).
/// @dev Storage per period: one slot at proposal (a commitment to the header) and one slot at
///      dispute or finalisation (state, unclaimed totals, claimed count), so that proposing costs one
///      new slot. Every later call passes the header back and is checked against the commitment.
///      Pausable comes last among the bases so that its `_paused` flag, `_meter` and `_meterSince` share
///      one slot: a proposal reads the flag and the key for one cold storage access
///      (`tests/contracts/test_layout.py`).
///      Reentrancy: only the functions that call the token (deposits and withdrawals) can be re-entered
///      through it, and they hold the storage-based guard (which static analysers can follow). Every other
///      state-changing function makes no external call; see `docs/security.md`.
contract V2GSettlement is IV2GSettlement, AccessControlDefaultAdminRules, EIP712, ReentrancyGuard, Pausable {
    using SafeERC20 for IERC20;

    /// @notice Proposes periods and claims entries on owners' behalf. Never held by the meter key.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice Disputes periods during their challenge window.
    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");
    /// @notice Pauses and unpauses deposits, proposals, finalisation, releases and claims (never
    ///         withdrawals or withdrawal requests).
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    /// @notice The most entries one {claimBatch} (or {depositForMany}) may carry.
    uint256 public constant MAX_BATCH = 200;

    /// @notice Bounds of the challenge window: long enough to dispute, short enough to ever finalise.
    uint64 public constant MIN_LIVENESS = 1 minutes;
    uint64 public constant MAX_LIVENESS = 30 days;
    /// @notice The withdrawal notice exceeds the challenge window by at least this much, so that a debit
    ///         proposed before an owner gives notice can be collected after finalisation.
    uint64 public constant MIN_COLLECTION_TIME = 1 days;
    uint64 public constant MAX_NOTICE_PERIOD = 90 days;
    /// @notice Bounds of the claim window (reserve kept after the challenge window).
    uint64 public constant MIN_CLAIM_WINDOW = 1 days;
    uint64 public constant MAX_CLAIM_WINDOW = 365 days;

    /// @notice EIP-712 type of what the meter signs.
    bytes32 public constant PERIOD_ROOT_TYPEHASH =
        keccak256("PeriodRoot(uint64 periodId,bytes32 root,uint96 totalCredit,uint96 totalDebit,uint32 entryCount)");

    /// @dev One slot: written at dispute or finalisation, then by claims.
    struct PeriodStatus {
        PeriodState state;
        uint96 creditRemaining;
        uint96 debitRemaining;
        uint32 claimedCount;
    }

    struct Withdrawal {
        uint192 amount;
        uint64 availableAt;
    }

    IERC20 private immutable _token;
    address private immutable _aggregator;
    uint64 private immutable _liveness;
    uint64 private immutable _noticePeriod;
    uint64 private immutable _claimWindow;

    /// @dev First state variables: packed into Pausable's slot (see the contract's @dev). The aggregator's
    ///      ledger balance lives here, not in `_balances`, so that a proposal reads the pause flag, the
    ///      meter key and the float with one cold access and reserves the float with one warm write.
    address private _meter;
    uint88 private _aggregatorBalance;
    uint64 private _meterSince;
    address private _pendingMeter;
    uint64 private _pendingMeterAt;
    mapping(address account => uint256) private _balances;
    mapping(address account => uint256) private _debts;
    mapping(address account => Withdrawal) private _withdrawals;
    mapping(uint64 periodId => bytes32) private _commitments;
    mapping(uint64 periodId => PeriodStatus) private _status;
    mapping(uint64 periodId => mapping(uint256 word => uint256)) private _claimed;

    /// @param token_ The ERC-20 settlement token (6 decimals in practice; any ERC-20 works).
    /// @param admin Holder of the default admin role (grants and revokes the others; its own transfer
    ///        waits `noticePeriod_`).
    /// @param aggregator_ The aggregator's ledger account.
    /// @param meter_ The metering party's signing key.
    /// @param liveness_ Challenge window in seconds, within [MIN_LIVENESS, MAX_LIVENESS].
    /// @param noticePeriod_ Withdrawal notice (and meter/admin change delay) in seconds, within
    ///        [liveness_ + MIN_COLLECTION_TIME, MAX_NOTICE_PERIOD].
    /// @param claimWindow_ Seconds after the challenge window during which credits stay reserved, within
    ///        [MIN_CLAIM_WINDOW, MAX_CLAIM_WINDOW].
    constructor(
        IERC20 token_,
        address admin,
        address aggregator_,
        address meter_,
        uint64 liveness_,
        uint64 noticePeriod_,
        uint64 claimWindow_
    ) AccessControlDefaultAdminRules(SafeCast.toUint48(noticePeriod_), admin) EIP712("V2GSettlement", "1") {
        if (address(token_) == address(0) || aggregator_ == address(0) || meter_ == address(0)) {
            revert ZeroAddress();
        }
        if (meter_ == aggregator_) revert MeterCannotPropose(meter_);
        if (liveness_ < MIN_LIVENESS || liveness_ > MAX_LIVENESS) {
            revert LivenessOutOfRange(liveness_, MIN_LIVENESS, MAX_LIVENESS);
        }
        uint64 minNotice = liveness_ + MIN_COLLECTION_TIME;
        if (noticePeriod_ < minNotice || noticePeriod_ > MAX_NOTICE_PERIOD) {
            revert NoticePeriodOutOfRange(noticePeriod_, minNotice, MAX_NOTICE_PERIOD);
        }
        if (claimWindow_ < MIN_CLAIM_WINDOW || claimWindow_ > MAX_CLAIM_WINDOW) {
            revert ClaimWindowOutOfRange(claimWindow_, MIN_CLAIM_WINDOW, MAX_CLAIM_WINDOW);
        }
        _token = token_;
        _aggregator = aggregator_;
        _liveness = liveness_;
        _noticePeriod = noticePeriod_;
        _claimWindow = claimWindow_;
        _meter = meter_;
        emit MeterChanged(address(0), meter_);
    }

    // --- escrow -------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function deposit(uint256 amount) external whenNotPaused nonReentrant {
        _deposit(msg.sender, amount);
    }

    /// @inheritdoc IV2GSettlement
    function depositFor(address account, uint256 amount) external whenNotPaused nonReentrant {
        if (account == address(0)) revert ZeroAddress();
        _deposit(account, amount);
    }

    /// @inheritdoc IV2GSettlement
    function depositForMany(address[] calldata accounts, uint256[] calldata amounts)
        external
        whenNotPaused
        nonReentrant
    {
        uint256 n = accounts.length;
        if (amounts.length != n) revert ArrayLengthMismatch();
        if (n > MAX_BATCH) revert BatchTooLarge(n, MAX_BATCH);
        uint256 total = 0;
        for (uint256 i = 0; i < n; ++i) {
            if (accounts[i] == address(0)) revert ZeroAddress();
            if (amounts[i] == 0) revert ZeroAmount();
            total += amounts[i];
        }
        _pull(total);
        for (uint256 i = 0; i < n; ++i) {
            _credit(accounts[i], amounts[i]);
        }
    }

    /// @inheritdoc IV2GSettlement
    function requestWithdrawal(uint256 amount) external nonReentrant returns (uint64 availableAt) {
        if (amount == 0) revert ZeroAmount();
        uint256 available = _balanceOf(msg.sender);
        if (available < amount) revert InsufficientBalance(msg.sender, available, amount);
        availableAt = uint64(block.timestamp) + _noticePeriod;
        _withdrawals[msg.sender] = Withdrawal(uint192(amount), availableAt); // amount <= balance < 2^192
        emit WithdrawalRequested(msg.sender, amount, availableAt);
    }

    /// @inheritdoc IV2GSettlement
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 available = _balanceOf(msg.sender);
        if (available < amount) revert InsufficientBalance(msg.sender, available, amount);
        Withdrawal memory notice = _withdrawals[msg.sender];
        if (notice.amount < amount) revert WithdrawalNotRequested(msg.sender, amount, notice.amount);
        if (block.timestamp < notice.availableAt) revert WithdrawalNotDue(msg.sender, notice.availableAt);
        _setBalance(msg.sender, available - amount);
        _withdrawals[msg.sender].amount = notice.amount - uint192(amount);
        emit Withdrawn(msg.sender, msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    // --- periods ------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function propose(
        uint64 periodId,
        bytes32 root,
        uint96 totalCredit,
        uint96 totalDebit,
        uint32 entryCount,
        bytes calldata meterSignature
    ) external whenNotPaused returns (uint64 challengeEnds) {
        if (msg.sender != _aggregator) revert NotAggregator(msg.sender);
        if (_commitments[periodId] != bytes32(0)) revert PeriodAlreadyExists(periodId);
        if (entryCount == 0 || (totalCredit == 0 && totalDebit == 0)) revert EmptyPeriod(periodId);
        address signer = ECDSA.recoverCalldata(
            periodRootDigest(periodId, root, totalCredit, totalDebit, entryCount), meterSignature
        );
        if (signer != _meter) revert InvalidMeterSignature(signer);
        if (totalCredit != 0) {
            uint88 available = _aggregatorBalance;
            if (available < totalCredit) revert UnderfundedPeriod(periodId, totalCredit, available);
            unchecked {
                _aggregatorBalance = available - uint88(totalCredit); // totalCredit <= available < 2^88
            }
        }
        unchecked {
            challengeEnds = uint64(block.timestamp) + _liveness; // liveness <= MAX_LIVENESS
        }
        _commitments[periodId] = _commit(root, totalCredit, totalDebit, entryCount, challengeEnds);
        emit PeriodProposed(periodId, root, totalCredit, totalDebit, entryCount, challengeEnds);
    }

    /// @inheritdoc IV2GSettlement
    function dispute(uint64 periodId, PeriodHeader calldata header, bytes32 reason) external onlyRole(AUDITOR_ROLE) {
        _requireState(periodId, header, PeriodState.Proposed);
        if (block.timestamp > header.challengeEnds) revert ChallengeWindowClosed(periodId, header.challengeEnds);
        _void(periodId, header, reason);
    }

    /// @inheritdoc IV2GSettlement
    function finalise(uint64 periodId, PeriodHeader calldata header) external whenNotPaused {
        _requireState(periodId, header, PeriodState.Proposed);
        if (block.timestamp <= header.challengeEnds) revert ChallengeWindowOpen(periodId, header.challengeEnds);
        uint64 proposedAt = header.challengeEnds - _liveness;
        if (proposedAt <= _meterSince) revert MeterRotatedSinceProposal(periodId, proposedAt, _meterSince);
        _status[periodId] = PeriodStatus(PeriodState.Finalised, header.totalCredit, header.totalDebit, 0);
        emit PeriodFinalised(periodId, header.totalCredit, header.totalDebit);
    }

    /// @inheritdoc IV2GSettlement
    function release(uint64 periodId, PeriodHeader calldata header) external whenNotPaused {
        PeriodState state = _stateOf(periodId, header);
        if (state == PeriodState.Proposed) {
            uint64 proposedAt = header.challengeEnds - _liveness;
            if (proposedAt > _meterSince) revert PeriodNotInState(periodId, PeriodState.Finalised, state);
            _void(periodId, header, "meter rotated");
            return;
        }
        if (state != PeriodState.Finalised) revert PeriodNotInState(periodId, PeriodState.Finalised, state);
        uint64 deadline = header.challengeEnds + _claimWindow;
        if (block.timestamp <= deadline) revert ClaimWindowOpen(periodId, deadline);
        PeriodStatus storage status = _status[periodId];
        uint96 amount = status.creditRemaining;
        if (amount == 0) revert NothingToRelease(periodId);
        status.creditRemaining = 0;
        _addBalance(_aggregator, amount);
        emit ReserveReleased(periodId, amount);
    }

    /// @inheritdoc IV2GSettlement
    function claim(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256 entryId,
        address owner,
        int256 amount,
        bytes32[] calldata proof
    ) external whenNotPaused {
        if (msg.sender != owner && !hasRole(SETTLER_ROLE, msg.sender)) revert NotOwnerOrSettler(msg.sender, owner);
        _requireState(periodId, header, PeriodState.Finalised);
        PeriodStatus memory status = _status[periodId];
        _claim(periodId, header, status, entryId, owner, amount, proof, false);
        _store(periodId, header, status);
    }

    /// @inheritdoc IV2GSettlement
    function claimBatch(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256[] calldata entryIds,
        address[] calldata owners,
        int256[] calldata amounts,
        bytes32[][] calldata proofs
    ) external onlyRole(SETTLER_ROLE) whenNotPaused {
        uint256 n = entryIds.length;
        if (owners.length != n || amounts.length != n || proofs.length != n) revert ArrayLengthMismatch();
        if (n > MAX_BATCH) revert BatchTooLarge(n, MAX_BATCH);
        _requireState(periodId, header, PeriodState.Finalised);
        PeriodStatus memory status = _status[periodId];
        for (uint256 i = 0; i < n; ++i) {
            _claim(periodId, header, status, entryIds[i], owners[i], amounts[i], proofs[i], true);
        }
        _store(periodId, header, status);
    }

    // --- meter --------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function setMeter(address newMeter) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newMeter == address(0)) revert ZeroAddress();
        if (newMeter == _aggregator) revert MeterCannotPropose(newMeter);
        uint64 effectiveAt = uint64(block.timestamp) + _noticePeriod;
        _pendingMeter = newMeter;
        _pendingMeterAt = effectiveAt;
        emit MeterChangeScheduled(_meter, newMeter, effectiveAt);
    }

    /// @inheritdoc IV2GSettlement
    function cancelMeterChange() external onlyRole(DEFAULT_ADMIN_ROLE) {
        address pending = _pendingMeter;
        if (pending == address(0)) revert NoMeterChangePending();
        delete _pendingMeter;
        delete _pendingMeterAt;
        emit MeterChangeCancelled(pending);
    }

    /// @inheritdoc IV2GSettlement
    function acceptMeter() external onlyRole(DEFAULT_ADMIN_ROLE) {
        address pending = _pendingMeter;
        if (pending == address(0)) revert NoMeterChangePending();
        if (block.timestamp < _pendingMeterAt) revert MeterChangeNotDue(pending, _pendingMeterAt);
        emit MeterChanged(_meter, pending);
        _meter = pending;
        _meterSince = uint64(block.timestamp);
        delete _pendingMeter;
        delete _pendingMeterAt;
    }

    // --- pause --------------------------------------------------------------

    /// @notice Pause deposits, proposals, finalisation, releases and claims. Withdrawals stay open.
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
    }

    /// @notice Lift a pause.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
    }

    // --- views --------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function token() external view returns (IERC20) {
        return _token;
    }

    /// @inheritdoc IV2GSettlement
    function aggregator() external view returns (address) {
        return _aggregator;
    }

    /// @inheritdoc IV2GSettlement
    function meter() external view returns (address) {
        return _meter;
    }

    /// @inheritdoc IV2GSettlement
    function meterSince() external view returns (uint64) {
        return _meterSince;
    }

    /// @inheritdoc IV2GSettlement
    function pendingMeter() external view returns (address pending, uint64 effectiveAt) {
        return (_pendingMeter, _pendingMeterAt);
    }

    /// @inheritdoc IV2GSettlement
    function liveness() external view returns (uint64) {
        return _liveness;
    }

    /// @inheritdoc IV2GSettlement
    function noticePeriod() external view returns (uint64) {
        return _noticePeriod;
    }

    /// @inheritdoc IV2GSettlement
    function claimWindow() external view returns (uint64) {
        return _claimWindow;
    }

    /// @inheritdoc IV2GSettlement
    function balanceOf(address account) external view returns (uint256) {
        return _balanceOf(account);
    }

    /// @inheritdoc IV2GSettlement
    function debtOf(address account) external view returns (uint256) {
        return _debts[account];
    }

    /// @inheritdoc IV2GSettlement
    function withdrawalOf(address account) external view returns (uint256 amount, uint64 availableAt) {
        Withdrawal memory notice = _withdrawals[account];
        return (notice.amount, notice.availableAt);
    }

    /// @inheritdoc IV2GSettlement
    function balancesOf(address[] calldata accounts)
        external
        view
        returns (uint256[] memory balances, uint256[] memory debts)
    {
        balances = new uint256[](accounts.length);
        debts = new uint256[](accounts.length);
        for (uint256 i = 0; i < accounts.length; ++i) {
            balances[i] = _balanceOf(accounts[i]);
            debts[i] = _debts[accounts[i]];
        }
    }

    /// @inheritdoc IV2GSettlement
    function periodState(uint64 periodId) public view returns (PeriodState) {
        PeriodState state = _status[periodId].state;
        if (state != PeriodState.None) return state;
        // a zero commitment is "never proposed" (a keccak commitment is never zero), not a balance check
        // slither-disable-next-line incorrect-equality
        return _commitments[periodId] == bytes32(0) ? PeriodState.None : PeriodState.Proposed;
    }

    /// @inheritdoc IV2GSettlement
    function remaining(uint64 periodId) external view returns (uint96 credit, uint96 debit) {
        PeriodStatus storage status = _status[periodId];
        return (status.creditRemaining, status.debitRemaining);
    }

    /// @inheritdoc IV2GSettlement
    function claimedCount(uint64 periodId) external view returns (uint32) {
        return _status[periodId].claimedCount;
    }

    /// @inheritdoc IV2GSettlement
    function isClaimed(uint64 periodId, uint256 entryId) external view returns (bool) {
        return _claimed[periodId][entryId >> 8] & (1 << (entryId & 0xff)) != 0;
    }

    /// @inheritdoc IV2GSettlement
    function leaf(uint64 periodId, uint256 entryId, address owner, int256 amount) public view returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(block.chainid, address(this), periodId, entryId, owner, amount))));
    }

    /// @inheritdoc IV2GSettlement
    function energyValue(uint256 wh, int256 pricePerKwh) external pure returns (int256) {
        return SettlementMath.energyValue(wh, pricePerKwh);
    }

    /// @inheritdoc IV2GSettlement
    function feeOf(uint256 amount, uint256 feeBps) external pure returns (uint256) {
        return SettlementMath.feeOf(amount, feeBps);
    }

    /// @inheritdoc IV2GSettlement
    function periodRootDigest(
        uint64 periodId,
        bytes32 root,
        uint96 totalCredit,
        uint96 totalDebit,
        uint32 entryCount
    ) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(PERIOD_ROOT_TYPEHASH, periodId, root, totalCredit, totalDebit, entryCount))
        );
    }

    // --- internals ----------------------------------------------------------

    function _balanceOf(address account) private view returns (uint256) {
        return account == _aggregator ? _aggregatorBalance : _balances[account];
    }

    /// @dev The aggregator's balance is a uint88 (3 * 10^26 base units): more reverts with SafeCast's error.
    function _setBalance(address account, uint256 value) private {
        if (account == _aggregator) _aggregatorBalance = SafeCast.toUint88(value);
        else _balances[account] = value;
    }

    function _addBalance(address account, uint256 amount) private {
        _setBalance(account, _balanceOf(account) + amount);
    }

    function _deposit(address account, uint256 amount) private {
        if (amount == 0) revert ZeroAmount();
        _pull(amount);
        _credit(account, amount);
    }

    /// @dev Take `amount` from the caller; refuse tokens that deliver a different amount.
    function _pull(uint256 amount) private {
        uint256 before = _token.balanceOf(address(this));
        _token.safeTransferFrom(msg.sender, address(this), amount);
        uint256 received = _token.balanceOf(address(this)) - before;
        if (received != amount) revert TransferAmountMismatch(amount, received);
    }

    /// @dev Credit a deposit to `account`, repaying its debt to the aggregator first.
    function _credit(address account, uint256 amount) private {
        uint256 debt = _debts[account];
        uint256 repaid = debt < amount ? debt : amount;
        if (repaid != 0) {
            _debts[account] = debt - repaid;
            _addBalance(_aggregator, repaid);
        }
        _addBalance(account, amount - repaid);
        emit Deposited(account, msg.sender, amount - repaid, repaid);
    }

    /// @dev Dispute or void a proposed period: its id is spent and its reserve returns to the aggregator.
    function _void(uint64 periodId, PeriodHeader calldata header, bytes32 reason) private {
        _status[periodId].state = PeriodState.Disputed;
        emit PeriodDisputed(periodId, msg.sender, reason);
        if (header.totalCredit != 0) {
            _addBalance(_aggregator, header.totalCredit);
            emit ReserveReleased(periodId, header.totalCredit);
        }
    }

    function _commit(bytes32 root, uint96 totalCredit, uint96 totalDebit, uint32 entryCount, uint64 challengeEnds)
        private
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(root, totalCredit, totalDebit, entryCount, challengeEnds));
    }

    function _stateOf(uint64 periodId, PeriodHeader calldata header) private view returns (PeriodState) {
        bytes32 commitment = _commitments[periodId];
        // slither-disable-next-line incorrect-equality
        if (commitment == bytes32(0)) return PeriodState.None; // never proposed (see periodState)
        if (
            commitment
                != _commit(header.root, header.totalCredit, header.totalDebit, header.entryCount, header.challengeEnds)
        ) {
            revert PeriodHeaderMismatch(periodId);
        }
        PeriodState actual = _status[periodId].state;
        return actual == PeriodState.None ? PeriodState.Proposed : actual;
    }

    function _requireState(uint64 periodId, PeriodHeader calldata header, PeriodState expected) private view {
        PeriodState actual = _stateOf(periodId, header);
        if (actual != expected) revert PeriodNotInState(periodId, expected, actual);
    }

    /// @dev Write back a period's status after claims; once every entry is claimed, what is left of the
    ///      reserve (signed credit total above the tree's credits) returns to the aggregator.
    function _store(uint64 periodId, PeriodHeader calldata header, PeriodStatus memory status) private {
        uint96 leftover = status.creditRemaining;
        if (leftover != 0 && status.claimedCount == header.entryCount) {
            status.creditRemaining = 0;
            _addBalance(_aggregator, leftover);
            emit ReserveReleased(periodId, leftover);
        }
        _status[periodId] = status;
    }

    /// @dev Pay one entry, updating `status` in memory (the caller stores it once).
    function _claim(
        uint64 periodId,
        PeriodHeader calldata header,
        PeriodStatus memory status,
        uint256 entryId,
        address owner,
        int256 amount,
        bytes32[] calldata proof,
        bool skipClaimed
    ) private {
        if (owner == address(0)) revert ZeroAddress();
        if (entryId >= header.entryCount) revert EntryOutOfRange(periodId, entryId, header.entryCount);
        if (amount == 0 || amount > int256(uint256(type(uint96).max)) || amount < -int256(uint256(type(uint96).max))) {
            revert AmountOutOfRange(amount);
        }
        uint256 bit = 1 << (entryId & 0xff);
        uint256 word = _claimed[periodId][entryId >> 8];
        if (word & bit != 0) {
            if (!skipClaimed) revert AlreadyClaimed(periodId, entryId);
            emit EntrySkipped(periodId, entryId);
            return;
        }
        if (!MerkleProof.verifyCalldata(proof, header.root, leaf(periodId, entryId, owner, amount))) {
            revert InvalidProof(periodId, entryId);
        }
        _claimed[periodId][entryId >> 8] = word | bit;
        ++status.claimedCount;

        uint256 paid;
        uint256 debtAdded = 0; // a credit adds no debt
        if (amount > 0) {
            paid = _payCredit(periodId, entryId, status, owner, uint96(uint256(amount)));
        } else {
            (paid, debtAdded) = _collectDebit(periodId, entryId, status, owner, uint96(uint256(-amount)));
        }
        emit EntryClaimed(periodId, entryId, owner, amount, paid, debtAdded);
    }

    /// @dev Credit `credit` to `owner` from the period's reserve; what the reserve no longer covers comes
    ///      from the aggregator's free balance.
    function _payCredit(uint64 periodId, uint256 entryId, PeriodStatus memory status, address owner, uint96 credit)
        private
        returns (uint256)
    {
        uint96 fromReserve = credit < status.creditRemaining ? credit : status.creditRemaining;
        status.creditRemaining -= fromReserve;
        if (credit != fromReserve) {
            uint256 shortfall = credit - fromReserve;
            uint256 available = _aggregatorBalance;
            if (available < shortfall) revert UnderfundedPeriod(periodId, shortfall, available);
            _aggregatorBalance = uint88(available - shortfall);
            emit CreditShortfallPaid(periodId, entryId, shortfall);
        }
        _addBalance(owner, credit);
        return credit;
    }

    /// @dev Collect `debit` from `owner`'s balance for the aggregator, within the period's signed debit
    ///      total; what the balance cannot cover becomes the owner's debt.
    function _collectDebit(uint64 periodId, uint256 entryId, PeriodStatus memory status, address owner, uint96 debit)
        private
        returns (uint256 paid, uint256 debtAdded)
    {
        if (debit > status.debitRemaining) revert ClaimExceedsPeriodTotal(periodId, entryId);
        status.debitRemaining -= debit;
        uint256 available = _balanceOf(owner);
        paid = available < debit ? available : debit;
        debtAdded = debit - paid;
        if (paid != 0) {
            _setBalance(owner, available - paid);
            _addBalance(_aggregator, paid);
        }
        if (debtAdded != 0) _debts[owner] += debtAdded;
    }
}

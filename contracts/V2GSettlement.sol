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
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {IV2GSettlement} from "./interfaces/IV2GSettlement.sol";
import {SettlementMath} from "./SettlementMath.sol";

/// @title V2GSettlement
/// @notice Escrow and per-period settlement of metered V2G trades. See {IV2GSettlement} and
///         `docs/security.md` (actors, rules, what an auditor watches).
/// @dev Storage per period: one slot at proposal (a commitment to the header) and one slot at
///      dispute or finalisation (state, unclaimed totals, claimed count), so that proposing costs one
///      new slot. Every later call passes the header back and is checked against the commitment.
///      The meter key, the end of a pause and the aggregator's free balance share one slot: a proposal
///      reads all three for one cold storage access and reserves the float with one warm write
///      (`tests/contracts/test_layout.py`).
///      Reentrancy: only the functions that call the token (deposits and withdrawals) can be re-entered
///      through it, and they hold the storage-based guard (which static analysers can follow). Every other
///      state-changing function makes no external call; see `docs/security.md`.
contract V2GSettlement is IV2GSettlement, AccessControlDefaultAdminRules, EIP712, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Proposes periods and claims entries on owners' behalf. Never held by the meter key.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice Disputes periods during their challenge window.
    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");
    /// @notice Pauses deposits and proposals for at most {MAX_PAUSE}. Nothing with a deadline stops
    ///         (disputes, finalisation, claims, releases), and notices run from the pause's end.
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    /// @notice The most entries one {claimBatch} (or {depositForMany}) may carry.
    uint256 public constant MAX_BATCH = 200;

    /// @notice Bounds of the challenge window: long enough to dispute, short enough to ever finalise.
    uint64 public constant MIN_LIVENESS = 1 minutes;
    uint64 public constant MAX_LIVENESS = 30 days;
    /// @notice The aggregator proposes each period within this time of its energy (the day that contains
    ///         a notice is proposed the next morning) ...
    uint64 public constant PROPOSAL_GRACE = 1 days;
    /// @notice ... and has at least this long after its challenge window to collect its debits before a
    ///         notice runs out: `noticePeriod >= liveness + PROPOSAL_GRACE + MIN_COLLECTION_TIME`.
    uint64 public constant MIN_COLLECTION_TIME = 1 days;
    /// @notice A notice that has run out can be used this long; then it expires (give notice again).
    uint64 public constant WITHDRAWAL_WINDOW = 7 days;
    /// @notice A pause lapses by itself after this long ...
    uint64 public constant MAX_PAUSE = 7 days;
    /// @notice ... and the next may start only `noticePeriod + PAUSE_GAP` after it ended, so that notices
    ///         always ripen between pauses.
    uint64 public constant PAUSE_GAP = 1 days;
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

    /// @dev An account's position towards the aggregator: its uncollected debits (`debt`) or the credits the
    ///      aggregator could not fund yet (`owed`); never both (they are netted).
    struct Position {
        uint128 debt;
        uint128 owed;
    }

    struct Withdrawal {
        uint192 amount;
        uint64 requestedAt;
    }

    IERC20 private immutable _token;
    address private immutable _aggregator;
    uint64 private immutable _liveness;
    uint64 private immutable _noticePeriod;
    uint64 private immutable _claimWindow;

    /// @dev Slot 0 (see the contract's @dev). The aggregator's free balance is `_aggregatorBalance +
    ///      _aggregatorExcess`: the first part sits next to the meter key for the proposal's sake, what
    ///      exceeds 2^64 - 1 spills into the second, so no deposit can fill it up to a cap.
    address private _meter;
    uint32 private _pausedUntil;
    uint64 private _aggregatorBalance;
    uint256 private _aggregatorExcess;
    uint64 private _meterSince;
    address private _pendingMeter;
    uint64 private _pendingMeterAt;
    /// @dev The last time a proposed period was voided (dispute, meter rotation): notices run from then.
    uint64 private _lastVoidAt;
    uint256 private _owedTotal;
    mapping(address account => uint256) private _balances;
    mapping(address account => Position) private _positions;
    mapping(address account => Withdrawal) private _withdrawals;
    mapping(uint64 periodId => bytes32) private _commitments;
    mapping(uint64 periodId => PeriodStatus) private _status;
    mapping(uint64 periodId => mapping(uint256 word => uint256)) private _claimed;
    mapping(bytes32 role => mapping(address account => uint64)) private _roleGrants;

    /// @param token_ The ERC-20 settlement token (6 decimals in practice; any ERC-20 works).
    /// @param admin Holder of the default admin role (schedules grants of the others, revokes them; its
    ///        own transfer waits `noticePeriod_`).
    /// @param aggregator_ The aggregator's ledger account.
    /// @param meter_ The metering party's signing key: it may hold no role and be neither admin nor
    ///        aggregator.
    /// @param roles_ The first holders of the settler, auditor and pauser roles (zero: none). Every later
    ///        grant waits `noticePeriod_` ({scheduleRoleGrant}).
    /// @param liveness_ Challenge window in seconds, within [MIN_LIVENESS, MAX_LIVENESS].
    /// @param noticePeriod_ Withdrawal notice (and the delay of meter, admin and role changes) in seconds,
    ///        within [liveness_ + PROPOSAL_GRACE + MIN_COLLECTION_TIME, MAX_NOTICE_PERIOD].
    /// @param claimWindow_ Seconds after the challenge window during which credits stay reserved, within
    ///        [MIN_CLAIM_WINDOW, MAX_CLAIM_WINDOW].
    constructor(
        IERC20 token_,
        address admin,
        address aggregator_,
        address meter_,
        InitialRoles memory roles_,
        uint64 liveness_,
        uint64 noticePeriod_,
        uint64 claimWindow_
    ) AccessControlDefaultAdminRules(SafeCast.toUint48(noticePeriod_), admin) EIP712("V2GSettlement", "1") {
        if (address(token_) == address(0) || aggregator_ == address(0) || meter_ == address(0)) {
            revert ZeroAddress();
        }
        if (meter_ == aggregator_) revert MeterCannotPropose(meter_);
        if (meter_ == admin) revert MeterCannotHoldRole(meter_);
        if (liveness_ < MIN_LIVENESS || liveness_ > MAX_LIVENESS) {
            revert LivenessOutOfRange(liveness_, MIN_LIVENESS, MAX_LIVENESS);
        }
        uint64 minNotice = liveness_ + PROPOSAL_GRACE + MIN_COLLECTION_TIME;
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
        if (roles_.auditor != address(0)) {
            if (roles_.auditor == aggregator_ || roles_.auditor == admin || roles_.auditor == roles_.settler) {
                revert RoleConflict(AUDITOR_ROLE, roles_.auditor);
            }
            _grantRole(AUDITOR_ROLE, roles_.auditor);
        }
        if (roles_.settler != address(0)) _grantRole(SETTLER_ROLE, roles_.settler);
        if (roles_.pauser != address(0)) _grantRole(PAUSER_ROLE, roles_.pauser);
    }

    // --- escrow -------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function deposit(uint256 amount) external nonReentrant {
        _requireNotPaused();
        _deposit(msg.sender, amount);
    }

    /// @inheritdoc IV2GSettlement
    function depositFor(address account, uint256 amount) external nonReentrant {
        _requireNotPaused();
        if (account == address(0)) revert ZeroAddress();
        _deposit(account, amount);
    }

    /// @inheritdoc IV2GSettlement
    function depositForMany(address[] calldata accounts, uint256[] calldata amounts) external nonReentrant {
        _requireNotPaused();
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
        _withdrawals[msg.sender] = Withdrawal(uint192(amount), uint64(block.timestamp)); // amount < 2^192
        availableAt = _dueAt(uint64(block.timestamp));
        emit WithdrawalRequested(msg.sender, amount, availableAt);
    }

    /// @inheritdoc IV2GSettlement
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        _requireNotPaused();
        uint256 available = _balanceOf(msg.sender);
        if (available < amount) revert InsufficientBalance(msg.sender, available, amount);
        Withdrawal memory notice = _withdrawals[msg.sender];
        if (notice.amount < amount) revert WithdrawalNotRequested(msg.sender, amount, notice.amount);
        uint64 due = _dueAt(notice.requestedAt);
        if (block.timestamp < due) revert WithdrawalNotDue(msg.sender, due);
        if (block.timestamp > due + WITHDRAWAL_WINDOW) {
            revert WithdrawalNoticeExpired(msg.sender, due + WITHDRAWAL_WINDOW);
        }
        if (msg.sender == _aggregator && _owedTotal != 0) revert CreditsOwed(_owedTotal);
        _setBalance(msg.sender, available - amount);
        _withdrawals[msg.sender].amount = notice.amount - uint192(amount);
        emit Withdrawn(msg.sender, msg.sender, amount);
        _token.safeTransfer(msg.sender, amount);
    }

    /// @inheritdoc IV2GSettlement
    function payOwed(address account) external returns (uint256 paid) {
        Position memory position = _positions[account];
        if (position.owed == 0) revert NothingOwed(account);
        uint256 available = _aggregatorFree();
        paid = position.owed < available ? position.owed : available;
        if (paid == 0) revert AggregatorUnderfunded(position.owed, 0);
        _positions[account].owed = position.owed - uint128(paid);
        _owedTotal -= paid;
        _takeAggregator(paid);
        _addBalance(account, paid);
        emit OwedCreditPaid(account, paid);
    }

    // --- periods ------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function propose(
        uint64 periodId,
        bytes32 root,
        uint96 totalCredit,
        uint96 totalDebit,
        uint32 entryCount,
        bytes32 signatureR,
        bytes32 signatureVS
    ) external returns (uint64 challengeEnds) {
        _requireNotPaused();
        if (msg.sender != _aggregator) revert NotAggregator(msg.sender);
        if (_commitments[periodId] != bytes32(0)) revert PeriodAlreadyExists(periodId);
        if (entryCount == 0 || (totalCredit == 0 && totalDebit == 0)) revert EmptyPeriod(periodId);
        address signer = ECDSA.recover(
            periodRootDigest(periodId, root, totalCredit, totalDebit, entryCount), signatureR, signatureVS
        );
        if (signer != _meter) revert InvalidMeterSignature(signer);
        if (totalCredit != 0) {
            uint64 hot = _aggregatorBalance;
            if (totalCredit <= hot) {
                unchecked {
                    _aggregatorBalance = hot - uint64(totalCredit); // totalCredit <= hot < 2^64
                }
            } else {
                uint256 available = uint256(hot) + _aggregatorExcess;
                if (available < totalCredit) revert UnderfundedPeriod(periodId, totalCredit, available);
                _setAggregatorFree(available - totalCredit);
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
        _lastVoidAt = uint64(block.timestamp);
        _void(periodId, header, reason);
    }

    /// @inheritdoc IV2GSettlement
    function finalise(uint64 periodId, PeriodHeader calldata header) external {
        _requireState(periodId, header, PeriodState.Proposed);
        if (block.timestamp <= header.challengeEnds) revert ChallengeWindowOpen(periodId, header.challengeEnds);
        uint64 proposedAt = header.challengeEnds - _liveness;
        if (proposedAt <= _meterSince) revert MeterRotatedSinceProposal(periodId, proposedAt, _meterSince);
        _status[periodId] = PeriodStatus(PeriodState.Finalised, header.totalCredit, header.totalDebit, 0);
        emit PeriodFinalised(periodId, header.totalCredit, header.totalDebit);
    }

    /// @inheritdoc IV2GSettlement
    function release(uint64 periodId, PeriodHeader calldata header) external {
        PeriodState state = _stateOf(periodId, header);
        if (state == PeriodState.Proposed) {
            uint64 proposedAt = header.challengeEnds - _liveness;
            if (proposedAt > _meterSince) revert PeriodNotInState(periodId, PeriodState.Finalised, state);
            _void(periodId, header, "meter rotated"); // notices already run from the rotation (acceptMeter)
            return;
        }
        if (state != PeriodState.Finalised) revert PeriodNotInState(periodId, PeriodState.Finalised, state);
        uint64 deadline = header.challengeEnds + _claimWindow;
        if (block.timestamp <= deadline) revert ClaimWindowOpen(periodId, deadline);
        PeriodStatus storage status = _status[periodId];
        uint96 amount = status.creditRemaining;
        if (amount == 0) revert NothingToRelease(periodId);
        status.creditRemaining = 0;
        _addAggregator(amount);
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
    ) external {
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
    ) external onlyRole(SETTLER_ROLE) {
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
        if (
            hasRole(DEFAULT_ADMIN_ROLE, newMeter) || hasRole(SETTLER_ROLE, newMeter)
                || hasRole(AUDITOR_ROLE, newMeter) || hasRole(PAUSER_ROLE, newMeter)
        ) revert MeterCannotHoldRole(newMeter);
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
        // the periods proposed under the previous key must be proposed again: notices run from now
        _lastVoidAt = uint64(block.timestamp);
        delete _pendingMeter;
        delete _pendingMeterAt;
    }

    // --- roles --------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function scheduleRoleGrant(bytes32 role, address account)
        external
        onlyRole(getRoleAdmin(role))
        returns (uint64 effectiveAt)
    {
        if (role == DEFAULT_ADMIN_ROLE) revert AccessControlEnforcedDefaultAdminRules();
        if (account == address(0)) revert ZeroAddress();
        _checkSeparation(role, account);
        effectiveAt = uint64(block.timestamp) + _noticePeriod;
        _roleGrants[role][account] = effectiveAt;
        emit RoleGrantScheduled(role, account, effectiveAt);
    }

    /// @inheritdoc IV2GSettlement
    function cancelRoleGrant(bytes32 role, address account) external onlyRole(getRoleAdmin(role)) {
        if (_roleGrants[role][account] == 0) revert RoleGrantNotScheduled(role, account);
        delete _roleGrants[role][account];
        emit RoleGrantCancelled(role, account);
    }

    /// @notice Grant a role whose grant was scheduled at least {noticePeriod} ago ({scheduleRoleGrant}).
    ///         Revoking and renouncing stay immediate.
    function grantRole(bytes32 role, address account) public override onlyRole(getRoleAdmin(role)) {
        if (role != DEFAULT_ADMIN_ROLE) {
            uint64 effectiveAt = _roleGrants[role][account];
            if (effectiveAt == 0) revert RoleGrantNotScheduled(role, account);
            if (block.timestamp < effectiveAt) revert RoleGrantNotDue(role, account, effectiveAt);
            delete _roleGrants[role][account];
        }
        super.grantRole(role, account); // the admin check, and the admin role's own two-step rules
    }

    // --- pause --------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function pause() external onlyRole(PAUSER_ROLE) {
        uint64 until = _pausedUntil;
        if (block.timestamp < until) revert EnforcedPause();
        if (until != 0 && block.timestamp < until + _noticePeriod + PAUSE_GAP) {
            revert PauseGapNotOver(until + _noticePeriod + PAUSE_GAP);
        }
        uint64 lapsesAt = uint64(block.timestamp) + MAX_PAUSE;
        _pausedUntil = SafeCast.toUint32(lapsesAt);
        emit Paused(msg.sender, lapsesAt);
    }

    /// @inheritdoc IV2GSettlement
    function unpause() external onlyRole(PAUSER_ROLE) {
        if (block.timestamp >= _pausedUntil) revert ExpectedPause();
        _pausedUntil = uint32(block.timestamp);
        emit Unpaused(msg.sender);
    }

    // --- views --------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function paused() public view returns (bool) {
        return block.timestamp < _pausedUntil;
    }

    /// @inheritdoc IV2GSettlement
    function pausedUntil() external view returns (uint64) {
        return _pausedUntil;
    }

    /// @inheritdoc IV2GSettlement
    function lastVoidAt() external view returns (uint64) {
        return _lastVoidAt;
    }

    /// @inheritdoc IV2GSettlement
    function roleGrantAt(bytes32 role, address account) external view returns (uint64) {
        return _roleGrants[role][account];
    }

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
        return _positions[account].debt;
    }

    /// @inheritdoc IV2GSettlement
    function owedTo(address account) external view returns (uint256) {
        return _positions[account].owed;
    }

    /// @inheritdoc IV2GSettlement
    function owedTotal() external view returns (uint256) {
        return _owedTotal;
    }

    /// @inheritdoc IV2GSettlement
    function withdrawalOf(address account)
        external
        view
        returns (uint256 amount, uint64 availableAt, uint64 expiresAt)
    {
        Withdrawal memory notice = _withdrawals[account];
        if (notice.amount > 0) {
            availableAt = _dueAt(notice.requestedAt);
            return (notice.amount, availableAt, availableAt + WITHDRAWAL_WINDOW);
        }
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
            debts[i] = _positions[accounts[i]].debt;
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

    function _requireNotPaused() private view {
        if (paused()) revert EnforcedPause();
    }

    /// @dev When a notice given at `requestedAt` runs out: `noticePeriod` after the latest of the request,
    ///      the last voided proposal (dispute, meter rotation) and the end of the last pause (now, while
    ///      paused), so that a period re-proposed after a dispute, or proposed after a pause, is collected
    ///      before the owner can leave.
    function _dueAt(uint64 requestedAt) private view returns (uint64) {
        uint64 from = requestedAt;
        uint64 voidedAt = _lastVoidAt;
        if (voidedAt > from) from = voidedAt;
        uint64 pauseEnd = _pausedUntil;
        if (pauseEnd > block.timestamp) pauseEnd = uint64(block.timestamp);
        if (pauseEnd > from) from = pauseEnd;
        return from + _noticePeriod;
    }

    /// @dev The meter key holds no role; the auditor is independent of the aggregator, the settlers and
    ///      the admin.
    function _checkSeparation(bytes32 role, address account) private view {
        if (account == _meter || account == _pendingMeter) revert MeterCannotHoldRole(account);
        if (role == AUDITOR_ROLE) {
            if (account == _aggregator || hasRole(SETTLER_ROLE, account) || hasRole(DEFAULT_ADMIN_ROLE, account)) {
                revert RoleConflict(role, account);
            }
        } else if (role == SETTLER_ROLE || role == DEFAULT_ADMIN_ROLE) {
            if (hasRole(AUDITOR_ROLE, account)) revert RoleConflict(role, account);
        }
    }

    /// @dev Every grant (the admin's at construction and transfer included) keeps the roles separate.
    function _grantRole(bytes32 role, address account) internal override returns (bool) {
        _checkSeparation(role, account);
        return super._grantRole(role, account);
    }

    function _aggregatorFree() private view returns (uint256) {
        return uint256(_aggregatorBalance) + _aggregatorExcess;
    }

    function _setAggregatorFree(uint256 value) private {
        uint256 hot = value < type(uint64).max ? value : type(uint64).max;
        _aggregatorBalance = uint64(hot);
        _aggregatorExcess = value - hot;
    }

    function _addAggregator(uint256 amount) private {
        uint256 hot = uint256(_aggregatorBalance) + amount;
        if (hot <= type(uint64).max) _aggregatorBalance = uint64(hot);
        else _setAggregatorFree(hot + _aggregatorExcess);
    }

    /// @dev Callers check that `amount` is at most the aggregator's free balance.
    function _takeAggregator(uint256 amount) private {
        uint64 hot = _aggregatorBalance;
        if (amount <= hot) {
            unchecked {
                _aggregatorBalance = hot - uint64(amount);
            }
        } else {
            _setAggregatorFree(uint256(hot) + _aggregatorExcess - amount);
        }
    }

    function _balanceOf(address account) private view returns (uint256) {
        return account == _aggregator ? _aggregatorFree() : _balances[account];
    }

    function _setBalance(address account, uint256 value) private {
        if (account == _aggregator) _setAggregatorFree(value);
        else _balances[account] = value;
    }

    function _addBalance(address account, uint256 amount) private {
        if (account == _aggregator) _addAggregator(amount);
        else _balances[account] += amount;
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
        uint128 debt = _positions[account].debt;
        uint256 repaid = debt < amount ? debt : amount;
        if (repaid != 0) {
            _positions[account].debt = debt - uint128(repaid);
            _addAggregator(repaid);
        }
        _addBalance(account, amount - repaid);
        emit Deposited(account, msg.sender, amount - repaid, repaid);
    }

    /// @dev Net an account's debt against what the aggregator owes it (only one of them stays non-zero).
    function _net(address account, Position memory position) private {
        uint128 offset = position.debt < position.owed ? position.debt : position.owed;
        if (offset == 0) return;
        position.debt -= offset;
        position.owed -= offset;
        _owedTotal -= offset;
        emit DebtOffset(account, offset);
    }

    /// @dev Dispute or void a proposed period: its id is spent and its reserve returns to the aggregator.
    function _void(uint64 periodId, PeriodHeader calldata header, bytes32 reason) private {
        _status[periodId].state = PeriodState.Disputed;
        emit PeriodDisputed(periodId, msg.sender, reason);
        if (header.totalCredit != 0) {
            _addAggregator(header.totalCredit);
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
            _addAggregator(leftover);
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

    /// @dev Credit `credit` to `owner`: from the period's reserve, then from the aggregator's free balance
    ///      (an under-declared total, a claim after release), and what neither covers is owed to the owner
    ///      by the aggregator ({payOwed}; the aggregator cannot withdraw meanwhile). The owner's debt is
    ///      repaid first. Returns what entered the owner's balance.
    function _payCredit(uint64 periodId, uint256 entryId, PeriodStatus memory status, address owner, uint96 credit)
        private
        returns (uint256 tokens)
    {
        tokens = credit < status.creditRemaining ? credit : status.creditRemaining;
        status.creditRemaining -= uint96(tokens);
        uint256 unfunded = 0;
        if (credit != tokens) {
            uint256 shortfall = credit - tokens;
            uint256 available = _aggregatorFree();
            uint256 taken = shortfall < available ? shortfall : available;
            if (taken != 0) {
                _takeAggregator(taken);
                emit CreditShortfallPaid(periodId, entryId, taken);
            }
            tokens += taken;
            unfunded = shortfall - taken;
        }
        Position memory position = _positions[owner];
        if (position.debt != 0 || unfunded != 0) {
            uint256 repaid = position.debt < tokens ? position.debt : tokens;
            if (repaid != 0) {
                position.debt -= uint128(repaid);
                tokens -= repaid;
                _addAggregator(repaid);
                emit DebtRepaid(owner, repaid);
            }
            if (unfunded != 0) {
                position.owed = SafeCast.toUint128(position.owed + unfunded);
                _owedTotal += unfunded;
                emit CreditOwed(periodId, entryId, owner, unfunded);
                _net(owner, position);
            }
            _positions[owner] = position;
        }
        if (tokens != 0) _addBalance(owner, tokens);
    }

    /// @dev Collect `debit` from `owner` for the aggregator, within the period's signed debit total: first
    ///      against what the aggregator owes the owner, then from the owner's balance; the rest becomes the
    ///      owner's debt (repaid first from its next credit or deposit).
    function _collectDebit(uint64 periodId, uint256 entryId, PeriodStatus memory status, address owner, uint96 debit)
        private
        returns (uint256 paid, uint256 debtAdded)
    {
        if (debit > status.debitRemaining) revert ClaimExceedsPeriodTotal(periodId, entryId);
        status.debitRemaining -= debit;
        Position memory position = _positions[owner];
        uint256 offset = position.owed < debit ? position.owed : debit;
        uint256 available = _balanceOf(owner);
        uint256 due = debit - offset;
        paid = available < due ? available : due;
        debtAdded = debit - paid;
        if (paid != 0) {
            _setBalance(owner, available - paid);
            _addAggregator(paid);
        }
        if (debtAdded != 0) {
            position.debt = SafeCast.toUint128(position.debt + debtAdded);
            _net(owner, position);
            _positions[owner] = position;
        }
    }
}

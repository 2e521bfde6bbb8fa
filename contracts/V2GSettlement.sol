// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IV2GSettlement} from "./interfaces/IV2GSettlement.sol";
import {SettlementMath} from "./SettlementMath.sol";

/// @title V2GSettlement
/// @notice Escrow and per-period settlement of metered V2G trades. See {IV2GSettlement}.
/// @dev Storage per period: one slot at proposal (a commitment to the header) and one slot at
///      dispute or finalisation (state and unclaimed totals), so that proposing costs one new slot.
///      Every later call passes the header back and is checked against the commitment.
///      Pausable comes last among the bases so that its `_paused` flag and `_meter` share one slot:
///      a proposal reads both for one cold storage access (`tests/contracts/test_layout.py`).
contract V2GSettlement is IV2GSettlement, AccessControl, EIP712, ReentrancyGuardTransient, Pausable {
    using SafeERC20 for IERC20;

    /// @notice Proposes periods and claims entries on owners' behalf.
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice Disputes periods during their challenge window.
    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");
    /// @notice Pauses and unpauses deposits, proposals, finalisation and claims (never withdrawals).
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");

    /// @notice The most entries one {claimBatch} may carry.
    uint256 public constant MAX_BATCH = 200;

    /// @notice EIP-712 type of what the meter signs.
    bytes32 public constant PERIOD_ROOT_TYPEHASH =
        keccak256("PeriodRoot(uint64 periodId,bytes32 root,uint96 totalCredit,uint96 totalDebit,uint32 entryCount)");

    struct PeriodStatus {
        PeriodState state;
        uint96 creditRemaining;
        uint96 debitRemaining;
    }

    IERC20 private immutable _token;
    address private immutable _aggregator;
    uint64 private immutable _liveness;

    /// @dev First state variable: packed into Pausable's slot (see the contract's @dev).
    address private _meter;
    mapping(address account => uint256) private _balances;
    mapping(address account => uint256) private _debts;
    mapping(uint64 periodId => bytes32) private _commitments;
    mapping(uint64 periodId => PeriodStatus) private _status;
    mapping(uint64 periodId => mapping(uint256 word => uint256)) private _claimed;

    /// @param token_ The ERC-20 settlement token (6 decimals in practice; any ERC-20 works).
    /// @param admin Holder of the admin role (grants and revokes the others).
    /// @param aggregator_ The aggregator's ledger account.
    /// @param meter_ The metering party's signing key.
    /// @param liveness_ Challenge window in seconds.
    constructor(IERC20 token_, address admin, address aggregator_, address meter_, uint64 liveness_)
        EIP712("V2GSettlement", "1")
    {
        if (
            address(token_) == address(0) || admin == address(0) || aggregator_ == address(0)
                || meter_ == address(0)
        ) {
            revert ZeroAddress();
        }
        _token = token_;
        _aggregator = aggregator_;
        _liveness = liveness_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _meter = meter_;
        emit MeterChanged(address(0), meter_);
    }

    // --- escrow -------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function deposit(uint256 amount) external {
        _deposit(msg.sender, amount);
    }

    /// @inheritdoc IV2GSettlement
    function depositFor(address account, uint256 amount) external {
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
    function withdraw(uint256 amount) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        uint256 available = _balances[msg.sender];
        if (available < amount) revert InsufficientBalance(msg.sender, available, amount);
        _balances[msg.sender] = available - amount;
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
    ) external onlyRole(SETTLER_ROLE) whenNotPaused returns (uint64 challengeEnds) {
        if (_commitments[periodId] != bytes32(0)) revert PeriodAlreadyExists(periodId);
        if (entryCount == 0 || (totalCredit == 0 && totalDebit == 0)) revert EmptyPeriod(periodId);
        address signer =
            ECDSA.recover(periodRootDigest(periodId, root, totalCredit, totalDebit, entryCount), meterSignature);
        if (signer != _meter) revert InvalidMeterSignature(signer);

        challengeEnds = uint64(block.timestamp) + _liveness;
        _commitments[periodId] = _commit(PeriodHeader(root, totalCredit, totalDebit, entryCount, challengeEnds));
        emit PeriodProposed(periodId, root, totalCredit, totalDebit, entryCount, challengeEnds);
    }

    /// @inheritdoc IV2GSettlement
    function dispute(uint64 periodId, PeriodHeader calldata header, bytes32 reason) external onlyRole(AUDITOR_ROLE) {
        _requireState(periodId, header, PeriodState.Proposed);
        if (block.timestamp > header.challengeEnds) revert ChallengeWindowClosed(periodId, header.challengeEnds);
        _status[periodId].state = PeriodState.Disputed;
        emit PeriodDisputed(periodId, msg.sender, reason);
    }

    /// @inheritdoc IV2GSettlement
    function finalise(uint64 periodId, PeriodHeader calldata header) external whenNotPaused {
        _requireState(periodId, header, PeriodState.Proposed);
        if (block.timestamp <= header.challengeEnds) revert ChallengeWindowOpen(periodId, header.challengeEnds);
        uint256 available = _balances[_aggregator];
        if (available < header.totalCredit) revert UnderfundedPeriod(periodId, header.totalCredit, available);
        _balances[_aggregator] = available - header.totalCredit;
        _status[periodId] = PeriodStatus(PeriodState.Finalised, header.totalCredit, header.totalDebit);
        emit PeriodFinalised(periodId, header.totalCredit, header.totalDebit);
    }

    /// @inheritdoc IV2GSettlement
    function claim(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256 entryId,
        address owner,
        int256 amount,
        bytes32[] calldata proof
    ) external whenNotPaused nonReentrant {
        if (msg.sender != owner && !hasRole(SETTLER_ROLE, msg.sender)) revert NotOwnerOrSettler(msg.sender, owner);
        _requireState(periodId, header, PeriodState.Finalised);
        _claim(periodId, header, entryId, owner, amount, proof);
    }

    /// @inheritdoc IV2GSettlement
    function claimBatch(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256[] calldata entryIds,
        address[] calldata owners,
        int256[] calldata amounts,
        bytes32[][] calldata proofs
    ) external onlyRole(SETTLER_ROLE) whenNotPaused nonReentrant {
        uint256 n = entryIds.length;
        if (owners.length != n || amounts.length != n || proofs.length != n) revert ArrayLengthMismatch();
        if (n > MAX_BATCH) revert BatchTooLarge(n, MAX_BATCH);
        _requireState(periodId, header, PeriodState.Finalised);
        for (uint256 i = 0; i < n; ++i) {
            _claim(periodId, header, entryIds[i], owners[i], amounts[i], proofs[i]);
        }
    }

    // --- meter --------------------------------------------------------------

    /// @inheritdoc IV2GSettlement
    function setMeter(address newMeter) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (newMeter == address(0)) revert ZeroAddress();
        emit MeterChanged(_meter, newMeter);
        _meter = newMeter;
    }

    // --- pause --------------------------------------------------------------

    /// @notice Pause deposits, proposals, finalisation and claims. Withdrawals stay open.
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
    function liveness() external view returns (uint64) {
        return _liveness;
    }

    /// @inheritdoc IV2GSettlement
    function balanceOf(address account) external view returns (uint256) {
        return _balances[account];
    }

    /// @inheritdoc IV2GSettlement
    function debtOf(address account) external view returns (uint256) {
        return _debts[account];
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
            balances[i] = _balances[accounts[i]];
            debts[i] = _debts[accounts[i]];
        }
    }

    /// @inheritdoc IV2GSettlement
    function periodState(uint64 periodId) public view returns (PeriodState) {
        PeriodState state = _status[periodId].state;
        if (state != PeriodState.None) return state;
        return _commitments[periodId] == bytes32(0) ? PeriodState.None : PeriodState.Proposed;
    }

    /// @inheritdoc IV2GSettlement
    function remaining(uint64 periodId) external view returns (uint96 credit, uint96 debit) {
        PeriodStatus storage status = _status[periodId];
        return (status.creditRemaining, status.debitRemaining);
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

    function _deposit(address account, uint256 amount) private whenNotPaused nonReentrant {
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
            _balances[_aggregator] += repaid;
        }
        _balances[account] += amount - repaid;
        emit Deposited(account, msg.sender, amount - repaid, repaid);
    }

    function _commit(PeriodHeader memory header) private pure returns (bytes32) {
        return keccak256(
            abi.encode(header.root, header.totalCredit, header.totalDebit, header.entryCount, header.challengeEnds)
        );
    }

    function _requireState(uint64 periodId, PeriodHeader calldata header, PeriodState expected) private view {
        bytes32 commitment = _commitments[periodId];
        if (commitment == bytes32(0)) revert PeriodNotInState(periodId, expected, PeriodState.None);
        if (commitment != _commit(header)) revert PeriodHeaderMismatch(periodId);
        PeriodState actual = _status[periodId].state;
        if (actual == PeriodState.None) actual = PeriodState.Proposed;
        if (actual != expected) revert PeriodNotInState(periodId, expected, actual);
    }

    function _claim(
        uint64 periodId,
        PeriodHeader calldata header,
        uint256 entryId,
        address owner,
        int256 amount,
        bytes32[] calldata proof
    ) private {
        if (owner == address(0)) revert ZeroAddress();
        if (entryId >= header.entryCount) revert EntryOutOfRange(periodId, entryId, header.entryCount);
        if (amount == 0 || amount > int256(uint256(type(uint96).max)) || amount < -int256(uint256(type(uint96).max))) {
            revert AmountOutOfRange(amount);
        }
        uint256 bit = 1 << (entryId & 0xff);
        uint256 word = _claimed[periodId][entryId >> 8];
        if (word & bit != 0) revert AlreadyClaimed(periodId, entryId);
        if (!MerkleProof.verifyCalldata(proof, header.root, leaf(periodId, entryId, owner, amount))) {
            revert InvalidProof(periodId, entryId);
        }
        _claimed[periodId][entryId >> 8] = word | bit;

        PeriodStatus storage status = _status[periodId];
        uint256 paid = 0;
        uint256 debtAdded = 0;
        if (amount > 0) {
            uint96 credit = uint96(uint256(amount));
            if (credit > status.creditRemaining) revert ClaimExceedsPeriodTotal(periodId, entryId);
            status.creditRemaining -= credit;
            _balances[owner] += credit;
            paid = credit;
        } else {
            uint96 debit = uint96(uint256(-amount));
            if (debit > status.debitRemaining) revert ClaimExceedsPeriodTotal(periodId, entryId);
            status.debitRemaining -= debit;
            uint256 available = _balances[owner];
            paid = available < debit ? available : debit;
            debtAdded = debit - paid;
            _balances[owner] = available - paid;
            if (paid != 0) _balances[_aggregator] += paid;
            if (debtAdded != 0) _debts[owner] += debtAdded;
        }
        emit EntryClaimed(periodId, entryId, owner, amount, paid, debtAdded);
    }
}

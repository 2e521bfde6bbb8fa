// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title SettlementMath
/// @notice The one rounding rule of v2g-settle, shared with Python (`backend/settlement/tariff.py`).
/// @dev Energy is whole Wh, prices are token base units per kWh, money is token base units.
///      Every division rounds to the nearest unit with halves away from zero; overflow reverts.
library SettlementMath {
    uint256 internal constant WH_PER_KWH = 1000;
    uint256 internal constant BPS = 10_000;

    /// @notice Value of `wh` at `pricePerKwh`: wh × price / 1000, rounded half away from zero.
    function energyValue(uint256 wh, int256 pricePerKwh) internal pure returns (int256) {
        uint256 magnitude = pricePerKwh < 0 ? uint256(-pricePerKwh) : uint256(pricePerKwh);
        int256 value = int256((wh * magnitude + WH_PER_KWH / 2) / WH_PER_KWH);
        return pricePerKwh < 0 ? -value : value;
    }

    /// @notice `feeBps` basis points of `amount`, rounded half up.
    function feeOf(uint256 amount, uint256 feeBps) internal pure returns (uint256) {
        return (amount * feeBps + BPS / 2) / BPS;
    }
}

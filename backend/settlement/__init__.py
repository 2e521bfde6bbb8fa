"""Settlement: trades → owner amounts, periods, Merkle trees, meter signatures, on-chain settlement."""

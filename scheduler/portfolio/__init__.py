"""Portfolio scale: many sites under a grid hierarchy, scheduled in blocks on Dask and coordinated."""

from scheduler.portfolio.blocks import PortfolioLimitInfeasibleError
from scheduler.portfolio.coordinate import PortfolioResult, solve_portfolio
from scheduler.portfolio.generate import PortfolioConfig, generate_portfolio
from scheduler.portfolio.model import Portfolio, PortfolioError, read_portfolio, write_portfolio

__all__ = [
    "Portfolio",
    "PortfolioConfig",
    "PortfolioError",
    "PortfolioLimitInfeasibleError",
    "PortfolioResult",
    "generate_portfolio",
    "read_portfolio",
    "solve_portfolio",
    "write_portfolio",
]

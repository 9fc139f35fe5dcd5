"""What simulations produced (:mod:`~iosim.results.result`), as tables (:mod:`~iosim.results.report`) and
files (:mod:`~iosim.results.store`); ``to_dataframe(results)`` gives a pandas DataFrame for notebooks."""
from iosim.results.report import records, to_dataframe

__all__ = ["records", "to_dataframe"]

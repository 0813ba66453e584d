"""One module per framework, each built only on :mod:`mltrail.autolog` and :mod:`mltrail.core`.

A module here is imported by the autolog engine only once its framework has been imported (or
when the user imports it to call its ``autolog()`` with framework-specific options). Which
modules exist, what activates them and the tested versions: :mod:`mltrail.autolog.registry`.
"""

"""facedapt's first-party plugins.

Each module implements the same hooks a third-party plugin does; the core registers them
directly (facedapt.plugin_manager.BUILTIN_PLUGINS) so they are always there.
"""

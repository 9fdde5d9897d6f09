"""BiRD's task logic: boxes in text, the four tasks, data construction, metrics, reports.

Nothing under this package imports paddle or paddlenlp, so evaluation runs with numpy alone.
"""

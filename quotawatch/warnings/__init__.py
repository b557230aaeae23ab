"""Stage 3b, warnings: whether to warn (``decision``, pure), how soon full (``forecast``), the
mail (``render`` + ``templates``), sending it (``mailer``), the admin ``digest``, and ``notify``
which ties them to a job's report and the state.
Takes reports, plans and stored state; never imports a mail adapter or the service.
"""

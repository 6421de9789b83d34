"""Campaigns: lists of numbers called at a pace with one app, retried, inside calling hours.

``spec`` checks what a client asks for (Exotel's v2 campaign fields), ``hours`` the daily
windows, ``states`` names the states, ``service`` creates and changes campaigns and runs this
process's drivers, ``driver`` places one campaign's calls through the dispatcher and settles
them. The statements are in ``storage/campaigns.py``; the v2 edge is ``api/campaigns.py``.
"""

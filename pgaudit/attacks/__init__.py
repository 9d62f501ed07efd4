"""pgaudit.attacks"""

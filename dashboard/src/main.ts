// Placeholder: replaced by the dashboard application.
document.getElementById('app')!.textContent = 'Cuttle dashboard';
